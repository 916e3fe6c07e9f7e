"""Resource samples: what an engine's optional ``sample_resources`` reports."""

from __future__ import annotations

import math

from rhapsody.resources import NodeSample
from rhapsody.session import Session
from rhapsody.testing.base import ConformanceBase
from rhapsody.testing.waiting import LoopRunner

PERCENT_FIELDS = ("cpu_percent", "memory_percent", "gpu_percent", "gpu_memory_percent")
BYTE_FIELDS = ("disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes")


class SamplingChecks(ConformanceBase):
    def test_resource_samples_are_well_formed(self, run: LoopRunner, session: Session) -> None:
        backend = next(iter(session.backends.values()))
        rounds = [run(backend.sample_resources(timeout=self.deadline)) for _ in range(2)]  # the second one measures since the first
        for samples in rounds:
            if self.samples_resources:
                assert samples, f"{backend.name}: the engine samples resources but reported none"
            else:
                assert samples == [], f"{backend.name}: samples from an engine declared without a sampler"
            for sample in samples:
                assert isinstance(sample, NodeSample) and isinstance(sample.node_id, str) and sample.node_id
                for field in PERCENT_FIELDS:
                    value = getattr(sample, field)
                    # a Dask worker's CPU is its process's, which may pass 100 % on several cores
                    assert value is None or (math.isfinite(value) and value >= 0), (field, sample)
                for field in BYTE_FIELDS:
                    value = getattr(sample, field)
                    assert value is None or value >= 0, (field, sample)
            node_samples = [s for s in samples if s.gpu_id is None]
            assert len({s.node_id for s in node_samples}) == len(node_samples), "one whole-node sample per node"
