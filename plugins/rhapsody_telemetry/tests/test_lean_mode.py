"""Telemetry when nobody asks for every transition as an event (no
subscriber, enricher or checkpoint): submissions and starts are counted as
they happen and a task's span is made only when it is read. What users see
must be what they see with events on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from rhapsody_telemetry.checkpoint import read_checkpoint
from rhapsody_telemetry.events import define_event, make_event

from rhapsody import ComputeTask, Session
from rhapsody.retry import RetryPolicy
from rhapsody.testing import tasks as fn
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


def boom() -> None:
    raise KeyError("no such key")


def _mixed() -> list[ComputeTask]:
    return [
        *(ComputeTask(function=time.sleep, args=(0.01,)) for _ in range(4)),
        ComputeTask(function=boom),
        ComputeTask(executable="/bin/sh", arguments=["-c", "exit 3"]),
    ]


async def _session(work_dir: Path) -> Session:
    return Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir)


async def _run(session: Session, tasks: list[ComputeTask]) -> None:
    await session.submit_tasks(tasks)
    await session.wait_tasks(tasks, timeout=120)


def test_counts_and_spans_without_events(work_dir: Path) -> None:
    async def go() -> tuple[dict[str, int], Any, list[ComputeTask]]:
        session = await _session(work_dir)
        telemetry = await session.start_telemetry()
        tasks = _mixed()
        await _run(session, tasks)
        counts = telemetry.task_count()
        await session.close()
        return counts, telemetry, tasks

    counts, telemetry, tasks = asyncio.run(go())
    assert counts == {"submitted": 6, "started": 6, "completed": 4, "failed": 2, "canceled": 0, "running": 0}
    spans = {s.attributes["task_id"]: s for s in telemetry.read_traces() if s.name == "task"}
    assert set(spans) == {t.uid for t in tasks}
    failed_fn, failed_exe = spans[tasks[4].uid], spans[tasks[5].uid]
    assert failed_fn.status.status_code is StatusCode.ERROR and failed_fn.status.description == "KeyError: 'no such key'"
    assert failed_fn.attributes["error_type"] == "KeyError" and failed_exe.attributes["exit_code"] == 3
    assert all(s.attributes["run_seconds"] >= 0 and "worker" in s.attributes for s in spans.values())
    assert telemetry.read_traces() == telemetry.read_traces()  # made once: the same span objects when read again
    summary = telemetry.summary()
    assert summary["duration"]["min_seconds"] >= 0 and summary["backends"]["local"]["failed"] == 2


def test_a_subscriber_added_mid_run_sees_what_follows_and_counts_stay_right(work_dir: Path) -> None:
    seen: list[Any] = []

    async def go() -> tuple[dict[str, int], list[ComputeTask]]:
        session = await _session(work_dir)
        telemetry = await session.start_telemetry()
        await _run(session, [ComputeTask(function=int) for _ in range(4)])
        telemetry.subscribe(seen.append)
        later = [ComputeTask(function=int) for _ in range(3)]
        await _run(session, later)
        counts = telemetry.task_count()
        await session.close()
        return counts, later

    counts, later = asyncio.run(go())
    assert counts == {"submitted": 7, "started": 7, "completed": 7, "failed": 0, "canceled": 0, "running": 0}
    completed = {e.task_id for e in seen if e.event_type == "TaskCompleted"}
    assert completed == {t.uid for t in later}
    assert sum(e.event_type == "TaskSubmitted" for e in seen) == 3


def test_spans_read_later_are_the_checkpoints(work_dir: Path) -> None:
    async def go() -> tuple[Any, Path, list[ComputeTask]]:
        session = await _session(work_dir)
        telemetry = await session.start_telemetry(checkpoint_path=work_dir / "telemetry")
        tasks = _mixed()
        await _run(session, tasks)
        await session.close()
        assert telemetry.checkpoint_file is not None
        return telemetry, telemetry.checkpoint_file, tasks

    telemetry, path, tasks = asyncio.run(go())
    lines = {r["attributes"]["task_id"]: r for r in read_checkpoint(path) if r["section"] == "span" and r["name"] == "task"}
    spans = {s.attributes["task_id"]: s for s in telemetry.read_traces() if s.name == "task"}
    assert set(lines) == set(spans) == {t.uid for t in tasks}
    for uid, span in spans.items():
        line = lines[uid]
        assert line["span_id"] == f"{span.context.span_id:016x}" and line["parent_span_id"] == f"{span.parent.span_id:016x}"
        assert line["attributes"] == dict(span.attributes)
        assert line["status_description"] == span.status.description


def test_the_checkpoint_keeps_what_its_fast_encoder_refuses(work_dir: Path) -> None:
    measured = define_event("lab.Measured", count=int)

    async def go() -> Path:
        session = await _session(work_dir)
        telemetry = await session.start_telemetry(checkpoint_path=work_dir / "telemetry")
        telemetry.emit(make_event(measured, session_id=telemetry.session_id, backend="lab", count=2**70, attributes={3: "x"}))
        await session.close()
        assert telemetry.checkpoint_file is not None
        return telemetry.checkpoint_file

    (line,) = [r for r in read_checkpoint(asyncio.run(go())) if r.get("event_type") == "lab.Measured"]
    assert line["count"] == 2**70 and line["attributes"] == {"3": "x"}


@pytest.mark.parametrize("events", [False, True], ids=["lean", "with-events"])
def test_a_retried_task_is_one_task_and_not_left_running(work_dir: Path, tmp_path: Path, events: bool) -> None:
    async def go() -> dict[str, int]:
        backend = await ConcurrentExecutionBackend(name="local", cores=2)
        session = Session(backends=[backend], work_dir=work_dir, retries=RetryPolicy(backoff=0.01, max_backoff=0.05))
        telemetry = await session.start_telemetry()
        if events:
            telemetry.subscribe(lambda event: None)
        flaky = ComputeTask(function=fn.fail_then_succeed, args=(str(tmp_path), 2), retries=2, retry_on=(fn.Transient,))
        await _run(session, [flaky, ComputeTask(function=int)])
        assert flaky.attempt == 3  # two failed attempts, then the one that returned
        counts = telemetry.task_count()
        await session.close()
        return counts

    counts = asyncio.run(go())
    assert counts == {"submitted": 2, "started": 4, "completed": 2, "failed": 0, "canceled": 0, "running": 0}
