"""Resource samples of the local node, for engines whose tasks run on this
host (the local pool, a single-node Dragon runtime, a local pilot).

psutil is imported on first use: an engine that calls this declares psutil
as its dependency. GPUs are read through NVML (``nvidia-ml-py``) when that is
importable and a driver answers; otherwise a sample simply has no GPU fields.
"""

from __future__ import annotations

import socket
from typing import Any

import attrs

from rhapsody.resources import NodeSample


class LocalNodeSampler:
    """Samples this host. Keep one per engine: disk and network figures are
    differences to the previous call, and CPU percent is measured since the
    previous call (the first call primes the counters)."""

    def __init__(self, node_id: str | None = None) -> None:
        import psutil  # noqa: PLC0415 - only engines that sample pay for the import

        self._psutil = psutil
        self.node_id = node_id or socket.gethostname()
        self._disk = psutil.disk_io_counters()
        self._net = psutil.net_io_counters()
        psutil.cpu_percent(interval=None)  # primes the counter: the next call measures since now
        self._nvml = _nvml()

    def sample(self) -> list[NodeSample]:
        psutil = self._psutil
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        node = NodeSample(
            node_id=self.node_id,
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_percent=psutil.virtual_memory().percent,
            disk_read_bytes=_delta(disk, self._disk, "read_bytes"),
            disk_write_bytes=_delta(disk, self._disk, "write_bytes"),
            net_sent_bytes=_delta(net, self._net, "bytes_sent"),
            net_recv_bytes=_delta(net, self._net, "bytes_recv"),
        )
        self._disk, self._net = disk, net
        gpus = _gpu_samples(self._nvml, self.node_id)
        if gpus:
            node = attrs.evolve(node, gpu_percent=max(g.gpu_percent or 0.0 for g in gpus))  # the busiest GPU
        return [node, *gpus]


def _delta(now: Any, before: Any, field: str) -> float | None:
    if now is None or before is None:
        return None
    return float(getattr(now, field) - getattr(before, field))


def _nvml() -> Any:
    """The NVML module once initialised, or None (no library, no driver, no GPU)."""
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: PLC0415

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVML here: samples carry no GPU fields
        return None
    return pynvml


def _gpu_samples(nvml: Any, node_id: str) -> list[NodeSample]:
    if nvml is None:
        return []
    samples = []
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            device = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = nvml.nvmlDeviceGetUtilizationRates(device)
            samples.append(NodeSample(node_id=node_id, gpu_id=index, gpu_percent=float(rates.gpu), gpu_memory_percent=float(rates.memory)))
    except Exception:  # noqa: BLE001 - a GPU that stops answering drops out of the sample
        return samples
    return samples
