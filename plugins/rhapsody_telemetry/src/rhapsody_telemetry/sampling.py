"""Polls a backend's resources (``Backend.sample_resources``, which asks its
engine) every few seconds and reports each sample as a `ResourceUpdate`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rhapsody.log import get_logger
from rhapsody_telemetry.events import ResourceUpdate, make_event

_log = get_logger("rhapsody.telemetry")


class ResourcePoller:
    def __init__(self, backend: Any, name: str, session_id: str, interval: float, emit: Callable[[Any], None]) -> None:
        if interval <= 0:
            raise ValueError(f"resource_poll_interval must be > 0 seconds, got {interval!r}")
        self.backend, self.name, self.session_id, self.interval, self.emit = backend, name, session_id, interval, emit
        self.task: asyncio.Task[None] | None = None
        self._warned = False

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"rhapsody-telemetry-poll-{self.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def poll_once(self) -> int:
        """One round of samples; returns how many were reported."""
        try:
            samples = await self.backend.sample_resources(timeout=max(10.0, 2 * self.interval))
        except Exception as exc:  # noqa: BLE001 - a sampler that fails must not stop the session
            if not self._warned:
                _log.warning("telemetry.sampling_failed", backend=self.name, error=f"{type(exc).__name__}: {exc}")
                self._warned = True
            return 0
        for sample in samples:
            fields = {k: getattr(sample, k) for k in _FIELDS}
            self.emit(make_event(ResourceUpdate, session_id=self.session_id, backend=self.name, node_id=sample.node_id, **fields))
        return len(samples)

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)


_FIELDS = (
    "cpu_percent",
    "memory_percent",
    "gpu_percent",
    "gpu_id",
    "disk_read_bytes",
    "disk_write_bytes",
    "net_sent_bytes",
    "net_recv_bytes",
)
