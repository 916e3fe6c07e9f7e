"""Resource samples for telemetry, the same for the three Dragon engines."""

from __future__ import annotations

from rhapsody.engine.sampling import LocalNodeSampler
from rhapsody.resources import NodeSample


class SamplesHeadNode:
    """An engine's ``sample_resources``: the node this process runs on. On a
    multi-node runtime the other nodes are not sampled: telemetry shows the head node only."""

    _sampler: LocalNodeSampler | None = None

    async def sample_resources(self) -> list[NodeSample]:
        if self._sampler is None:
            self._sampler = LocalNodeSampler()  # its first CPU reading needs a baseline: one per engine
        return self._sampler.sample()
