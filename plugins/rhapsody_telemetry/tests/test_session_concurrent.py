"""Telemetry of a Session on the real concurrent backend: counts, spans,
events, subscribers, resource samples, bounded span memory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from opentelemetry.trace import StatusCode

from rhapsody import ComputeTask, Session
from rhapsody.telemetry import TelemetryReader, TelemetrySubscriber
from rhapsody.telemetry.manager import TelemetryManager
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


def boom() -> None:
    raise KeyError("no such key")


def _tasks() -> list[ComputeTask]:
    return [
        *(ComputeTask(function=time.sleep, args=(0.01,)) for _ in range(6)),
        ComputeTask(function=boom),
        ComputeTask(executable="/bin/sh", arguments=["-c", "exit 3"]),
        ComputeTask(executable="/bin/sleep", arguments=["60"]),
    ]


async def _run(session: Session, telemetry: Any) -> list[ComputeTask]:
    tasks = _tasks()
    await session.submit_tasks(tasks)
    await session.wait_tasks(tasks[:-1], timeout=120)
    deadline = time.monotonic() + 60
    while tasks[-1].state.value != "RUNNING":  # the sleeper is cancelled once it runs
        assert time.monotonic() < deadline, "concurrent: /bin/sleep did not start within 60 s"
        await asyncio.sleep(0.02)
    await session.cancel_tasks([tasks[-1]])
    await session.wait_tasks(tasks, timeout=120)
    return tasks


def test_counts_spans_and_events(work_dir: Path) -> None:
    seen: list[Any] = []
    seen_async: list[str] = []

    async def record_async(event: Any) -> None:
        await asyncio.sleep(0)
        seen_async.append(event.event_type)

    async def go() -> tuple[Any, list[ComputeTask]]:
        backend = await ConcurrentExecutionBackend(name="local", cores=2)
        session = Session(backends=[backend], work_dir=work_dir)
        telemetry = await session.start_telemetry(resource_poll_interval=0.2)
        TelemetrySubscriber(telemetry).subscribe(seen.append)
        telemetry.subscribe(record_async)
        telemetry.subscribe(lambda event: 1 / 0)  # a broken subscriber hurts nobody
        tasks = await _run(session, telemetry)
        running = telemetry.task_count()
        assert running == {"submitted": 9, "started": 9, "completed": 6, "failed": 2, "canceled": 1, "running": 0}
        await session.close()
        return telemetry, tasks

    telemetry, tasks = asyncio.run(go())
    spans = telemetry.read_traces()
    (session_span,) = [s for s in spans if s.name == "session"]
    task_spans = {s.attributes["task_id"]: s for s in spans if s.name == "task"}
    assert set(task_spans) == {t.uid for t in tasks}
    for span in task_spans.values():
        assert span.parent.span_id == session_span.context.span_id
        assert span.context.trace_id == session_span.context.trace_id
        assert span.attributes["backend"] == "local" and span.attributes["kind"] == "compute"
        assert span.start_time <= span.end_time
    failed_fn, failed_exe, canceled = (task_spans[t.uid] for t in tasks[6:])
    assert failed_fn.attributes["error_type"] == "KeyError" and failed_fn.status.status_code is StatusCode.ERROR
    assert failed_exe.attributes["exit_code"] == 3 and failed_exe.attributes["task_type"] == "executable"
    assert canceled.attributes["status"] == "canceled"
    assert task_spans[tasks[0].uid].attributes["resources.cores_per_rank"] == 1
    # the span runs from submission to the end: the 10 ms sleep is inside it (the run time is
    # measured between the RUNNING and DONE reports, which a busy loop may take in together)
    first = task_spans[tasks[0].uid]
    assert first.end_time - first.start_time >= 10_000_000 and first.attributes["run_seconds"] >= 0

    kinds = [e.event_type for e in seen]
    assert kinds[0] == "SessionStarted" and kinds[-1] == "SessionEnded"
    for kind, n in {"TaskSubmitted": 9, "TaskStarted": 9, "TaskCompleted": 6, "TaskFailed": 2, "TaskCanceled": 1}.items():
        assert kinds.count(kind) == n, kind
    assert "ResourceUpdate" in kinds
    failed = [e for e in seen if e.event_type == "TaskFailed"]
    assert sorted(e.error_type for e in failed) == ["KeyError", "TaskExecutionError"]
    assert sorted(seen_async) == sorted(kinds)

    summary = telemetry.summary()
    assert summary["tasks"]["completed"] == 6 and summary["backends"]["local"]["failed"] == 2
    assert summary["duration"]["min_seconds"] >= 0 and summary["queue_wait"]["mean_seconds"] >= 0
    (node,) = [r for r in summary["resources"].values() if r["gpu_id"] is None]
    assert node["backend"] == "local" and 0 <= node["memory_percent"] <= 100
    assert len(TelemetryReader(telemetry).read_traces(task_id=tasks[0].uid)) == 1
    records = telemetry.task_spans()
    assert {r["status"] for r in records} == {"completed", "failed", "canceled"}


def test_metrics_are_standard_otel_points(work_dir: Path) -> None:
    async def go() -> Any:
        session = Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir)
        telemetry = await session.start_telemetry(resource_poll_interval=0.2)
        tasks = [ComputeTask(function=time.sleep, args=(0.01,)) for _ in range(5)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=120)
        await asyncio.sleep(0.5)  # a resource sample or two
        metrics = telemetry.read_metrics()
        await session.close()
        return metrics

    points: dict[str, list[Any]] = {}
    for rm in go_metrics(asyncio.run(go())):
        points.setdefault(rm[0], []).append(rm[1])
    assert [p.value for p in points["tasks_completed"]] == [5]
    assert dict(points["tasks_completed"][0].attributes)["backend"] == "local"
    assert [p.value for p in points["tasks_running"]] == [0]
    (duration,) = points["task_duration_seconds"]
    assert duration.count == 5 and duration.sum > 0
    assert 1.0 in duration.explicit_bounds  # seconds, not the SDK's millisecond default
    assert points["task_queue_wait_seconds"][0].count == 5
    assert 0 <= points["node_memory_utilization"][0].value <= 100
    assert dict(points["node_cpu_utilization"][0].attributes)["node_id"]


def go_metrics(metrics: Any) -> list[tuple[str, Any]]:
    return [(m.name, p) for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics for p in m.data.data_points]


def test_span_memory_is_bounded_and_totals_stay_complete(work_dir: Path) -> None:
    async def go() -> TelemetryManager:
        session = Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir)
        telemetry = TelemetryManager(session.uid, max_spans=50)
        telemetry.observe_session(session)
        await telemetry.start()
        tasks = [ComputeTask(function=int) for _ in range(500)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=300)
        await session.close()
        await telemetry.stop()
        return telemetry

    telemetry = asyncio.run(go())
    assert len(telemetry.read_traces()) == 50
    assert telemetry.task_count()["completed"] == 500
    assert telemetry.summary()["duration"]  # statistics of all 500, not of the 50 kept


def test_backend_added_later_is_watched_and_other_sessions_are_not(work_dir: Path) -> None:
    async def go() -> tuple[dict[str, int], dict[str, Any]]:
        session = Session(backends=[await ConcurrentExecutionBackend(name="first", cores=1)], work_dir=work_dir)
        other = Session(backends=[await ConcurrentExecutionBackend(name="other", cores=1)], work_dir=work_dir)
        telemetry = await session.start_telemetry()
        session.add_backend(await ConcurrentExecutionBackend(name="second", cores=1))
        mine = [ComputeTask(function=int, backend=name) for name in ("first", "second")]
        theirs = [ComputeTask(function=int)]
        await session.submit_tasks(mine)
        await other.submit_tasks(theirs)
        await session.wait_tasks(mine, timeout=120)
        await other.wait_tasks(theirs, timeout=120)
        await other.close()
        await session.close()
        return telemetry.task_count(), telemetry.summary()["backends"]

    counts, backends = asyncio.run(go())
    assert counts["completed"] == 2 and set(backends) == {"first", "second"}


def test_a_backend_without_a_sampler_is_not_an_error(work_dir: Path) -> None:
    async def go() -> dict[str, Any]:
        session = Session(backends=["noop"], work_dir=work_dir)
        telemetry = await session.start_telemetry(resource_poll_interval=0.1)
        tasks = [ComputeTask(function=int) for _ in range(3)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=60)
        await asyncio.sleep(0.3)
        await session.close()
        return telemetry.summary()

    summary = asyncio.run(go())
    assert summary["tasks"]["completed"] == 3 and summary["resources"] == {}


def test_started_while_tasks_run_counts_no_negative_running(work_dir: Path) -> None:
    async def go() -> dict[str, int]:
        session = Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir)
        early = [ComputeTask(function=time.sleep, args=(0.3,)) for _ in range(2)]
        await session.submit_tasks(early)
        deadline = time.monotonic() + 60
        while any(t.state.value != "RUNNING" for t in early):
            assert time.monotonic() < deadline, "concurrent: tasks did not start within 60 s"
            await asyncio.sleep(0.01)
        telemetry = await session.start_telemetry()
        late = [ComputeTask(function=int) for _ in range(3)]
        await session.submit_tasks(late)
        await session.wait_tasks(early + late, timeout=120)
        counts = telemetry.task_count()
        await session.close()
        return counts

    counts = asyncio.run(go())
    assert counts == {"submitted": 3, "started": 3, "completed": 5, "failed": 0, "canceled": 0, "running": 0}
