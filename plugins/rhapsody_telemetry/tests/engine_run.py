"""One telemetry run on a real engine, shared by the Dragon and RADICAL-Pilot
suites (they run it from their own components, where those engines are)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from rhapsody import ComputeTask, Session
from rhapsody.execution.backend import Backend


async def telemetry_run(backend: Backend, work_dir: Path, tasks: list[ComputeTask], deadline: float = 300.0) -> tuple[Any, list[Any]]:
    """Run ``tasks`` on ``backend`` with telemetry on (checkpoint in ``work_dir``);
    return the TelemetryManager and the ResourceUpdate events seen. Waits until
    at least one resource sample arrived."""
    samples: list[Any] = []
    session = Session(backends=[backend], work_dir=work_dir)
    telemetry = await session.start_telemetry(resource_poll_interval=0.5, checkpoint_path=str(work_dir / "telemetry"))
    telemetry.subscribe(lambda e: samples.append(e) if e.event_type == "ResourceUpdate" else None)
    try:
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=deadline)
        loop = asyncio.get_running_loop()
        until = loop.time() + 60
        while not samples:
            assert loop.time() < until, f"{backend.name}: no resource sample within 60 s"
            await asyncio.sleep(0.1)
    finally:
        await session.close()
    return telemetry, samples


def check_run(telemetry: Any, samples: list[Any], backend: str, done: int, failed: int, error_type: str, worker: str) -> dict[str, str]:
    """What every engine's run must show: counts, one span per task with its
    backend, error type and worker (matching the regex ``worker``, in the
    checkpoint too), well-formed samples, a non-empty checkpoint. Returns
    each task's worker by uid."""
    counts = telemetry.task_count()
    assert (counts["submitted"], counts["completed"], counts["failed"]) == (done + failed, done, failed), counts
    spans = [s for s in telemetry.read_traces() if s.name == "task"]
    assert len(spans) == done + failed and {s.attributes["backend"] for s in spans} == {backend}
    assert [s.attributes["error_type"] for s in spans if s.attributes["status"] == "failed"] == [error_type] * failed
    assert all(e.cpu_percent is not None and 0 <= e.memory_percent <= 100 for e in samples), samples
    assert telemetry.checkpoint_file is not None and telemetry.checkpoint_file.stat().st_size > 0
    workers = {s.attributes["task_id"]: s.attributes.get("worker") for s in spans}
    assert all(isinstance(w, str) and re.fullmatch(worker, w) for w in workers.values()), workers
    lines = [json.loads(line) for line in telemetry.checkpoint_file.read_text().splitlines()]
    saved = {
        r["attributes"]["task_id"]: r["attributes"].get("worker") for r in lines if r.get("section") == "span" and r.get("name") == "task"
    }
    assert saved == workers
    return workers
