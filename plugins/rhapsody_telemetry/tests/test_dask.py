"""Telemetry of a Session on the real Dask backend (a LocalCluster of two
worker processes): task spans and counts, one resource sample per worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rhapsody import ComputeTask, Session
from rhapsody_dask.backend import DaskExecutionBackend


def fails() -> None:
    raise ValueError("on purpose")


def test_dask_session_telemetry(work_dir: Path) -> None:
    resource_events: list[Any] = []

    async def go() -> Any:
        backend = await DaskExecutionBackend(resources={"n_workers": 2, "threads_per_worker": 1}, name="dask")
        session = Session(backends=[backend], work_dir=work_dir)
        telemetry = await session.start_telemetry(resource_poll_interval=0.3, checkpoint_path=str(work_dir / "telemetry"))
        telemetry.subscribe(lambda e: resource_events.append(e) if e.event_type == "ResourceUpdate" else None)
        try:
            tasks = [ComputeTask(function=sum, args=([1, 2],)) for _ in range(20)] + [ComputeTask(function=fails)]
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks, timeout=300)
            deadline = asyncio.get_running_loop().time() + 60
            while len({e.node_id for e in resource_events}) < 2:  # each worker sampled at least once
                assert asyncio.get_running_loop().time() < deadline, "dask: no resource sample of both workers within 60 s"
                await asyncio.sleep(0.1)
        finally:
            await session.close()
        return telemetry

    telemetry = asyncio.run(go())
    counts = telemetry.task_count()
    assert (counts["submitted"], counts["completed"], counts["failed"]) == (21, 20, 1)
    spans = [s for s in telemetry.read_traces() if s.name == "task"]
    assert len(spans) == 21 and {s.attributes["backend"] for s in spans} == {"dask"}
    assert [s.attributes["error_type"] for s in spans if s.attributes["status"] == "failed"] == ["ValueError"]
    workers = {e.node_id for e in resource_events}
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    assert {s.attributes["worker"] for s in spans} <= workers  # each task's span names the worker that ran it
    assert {r["worker"] for r in telemetry.task_spans()} <= workers
    assert all(e.cpu_percent is not None and 0 <= e.memory_percent <= 100 for e in resource_events)
    assert {r["node_id"] for r in telemetry.summary()["resources"].values()} == workers
    assert telemetry.checkpoint_file is not None and telemetry.checkpoint_file.stat().st_size > 0
