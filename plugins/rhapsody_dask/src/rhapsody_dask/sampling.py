"""Resource samples of a Dask cluster: one per worker, from the scheduler's
view of its workers (the metrics each worker heartbeats to it)."""

from __future__ import annotations

from typing import Any

from rhapsody.resources import NodeSample


def worker_samples(workers: dict[str, dict[str, Any]]) -> list[NodeSample]:
    samples = []
    for address, worker in workers.items():
        metrics = worker.get("metrics") or {}
        limit = worker.get("memory_limit") or 0
        memory = metrics.get("memory")
        gpu = metrics.get("gpu_utilization")
        samples.append(
            NodeSample(
                node_id=str(address),
                cpu_percent=_number(metrics.get("cpu")),
                memory_percent=100.0 * memory / limit if isinstance(memory, (int, float)) and limit else None,
                gpu_percent=_number(gpu),
            )
        )
    return samples


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
