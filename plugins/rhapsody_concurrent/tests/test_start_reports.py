"""A start reported from a pool thread reaches the loop without a wake-up of its
own while reports are flowing (one wake-up per short task, not two). What
observers, timeouts and cancel see must not change: these tests pin that."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from rhapsody import ComputeTask, Session, TaskState, TaskTimeoutError
from rhapsody.testing.conformance import wait_for_state
from rhapsody.testing.tasks import noop
from rhapsody_concurrent.backend import ConcurrentExecutionBackend

STREAM = 300  # short tasks before the one under test: the loop is then in its "reports are flowing" mode


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


def _stamped_sleep(seconds: float, marks: list[float]) -> None:
    marks.append(time.time())
    time.sleep(seconds)
    marks.append(time.time())


def _blocked(release: threading.Event) -> str:
    if not release.wait(60):  # never hangs a test run: the test fails on the state it waits for first
        raise TimeoutError("the test never released this task")
    return "released"


def _transitions(backend: ConcurrentExecutionBackend) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    backend.register_callback(lambda task, state: seen.setdefault(task.uid, []).append(state))
    return seen


def test_running_is_stamped_when_the_function_starts(tmp_path: Path) -> None:
    marks: list[float] = []
    task = ComputeTask(function=_stamped_sleep, args=(0.5, marks))

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as s:
            await s.submit_tasks([ComputeTask(function=noop) for _ in range(STREAM)] + [task])
            await task

    run(go())
    stamps = task.timestamps
    started, ended = marks
    assert stamps["SUBMITTED"] <= stamps["RUNNING"] <= started, "RUNNING must be when the pool thread started the task"
    assert stamps["DONE"] >= ended


def test_a_long_task_is_seen_running_while_it_runs(tmp_path: Path) -> None:
    """After a stream of short tasks the start of a long one wakes nobody: it
    must still be seen RUNNING (state, callbacks) while it runs."""
    release = threading.Event()
    long = ComputeTask(function=_blocked, args=(release,))
    backend = ConcurrentExecutionBackend(cores=2)
    seen = _transitions(backend)

    async def go() -> None:
        async with Session(backends=[backend], work_dir=tmp_path) as s:
            short = [ComputeTask(function=noop) for _ in range(STREAM)]
            await s.submit_tasks([*short, long])
            try:
                await wait_for_state(long, TaskState.RUNNING, timeout=30)
                assert seen[long.uid] == ["SUBMITTED", "RUNNING"]
            finally:
                release.set()
            assert (await long).return_value == "released"
            for t in short:
                assert seen[t.uid] == ["SUBMITTED", "RUNNING", "DONE"], t.uid

    run(go())
    assert long.timestamps["RUNNING"] <= long.timestamps["DONE"]


def test_a_timeout_counts_from_the_start_after_a_stream(tmp_path: Path) -> None:
    task = ComputeTask(function=_stamped_sleep, args=(3.0, []), timeout=0.5)

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as s:
            await s.submit_tasks([ComputeTask(function=noop) for _ in range(STREAM)] + [task])
            await s.wait_tasks([task])

    run(go())
    assert task.state is TaskState.FAILED and isinstance(task.exception, TaskTimeoutError)
    took = task.timestamps["FAILED"] - task.timestamps["RUNNING"]
    assert 0.5 <= took < 3.0, f"timed out {took:.2f} s after RUNNING"


def test_cancel_of_a_quietly_started_task_shows_running_then_canceled(tmp_path: Path) -> None:
    release = threading.Event()
    long = ComputeTask(function=_blocked, args=(release,))
    backend = ConcurrentExecutionBackend(cores=2)
    seen = _transitions(backend)

    async def go() -> None:
        async with Session(backends=[backend], work_dir=tmp_path) as s:
            await s.submit_tasks([ComputeTask(function=noop) for _ in range(STREAM)] + [long])
            try:
                await wait_for_state(long, TaskState.RUNNING, timeout=30)
                assert await s.cancel_tasks([long]) == [True]
            finally:
                release.set()
            await s.wait_tasks([long])
            await asyncio.sleep(0.3)  # the function's late result must be dropped

    run(go())
    assert long.state is TaskState.CANCELED
    assert seen[long.uid] == ["SUBMITTED", "RUNNING", "CANCELED"]


def test_one_at_a_time_every_task_passes_through_running(tmp_path: Path) -> None:
    backend = ConcurrentExecutionBackend(cores=2)
    seen = _transitions(backend)
    tasks = [ComputeTask(function=noop) for _ in range(200)]

    async def go() -> None:
        async with Session(backends=[backend], work_dir=tmp_path) as s:
            for t in tasks:
                await s.submit_tasks([t])
                await t

    run(go())
    for t in tasks:
        assert seen[t.uid] == ["SUBMITTED", "RUNNING", "DONE"]
        assert t.timestamps["SUBMITTED"] <= t.timestamps["RUNNING"] <= t.timestamps["DONE"]


def test_the_end_of_a_task_before_a_long_one_is_seen_while_that_one_runs(tmp_path: Path) -> None:
    """One core: the job that ends a short task is already on the next one when
    it reports, so that end does not wake the loop by itself. It must still be
    seen DONE (state, callbacks, future), stamped when it ended, while the long
    task that followed it on the same thread runs."""
    release = threading.Event()
    marks: list[float] = []
    backend = ConcurrentExecutionBackend(cores=1)
    seen = _transitions(backend)
    short = [ComputeTask(function=noop) for _ in range(STREAM)]
    stamped = ComputeTask(function=_stamped_sleep, args=(0.0, marks))
    long = ComputeTask(function=_blocked, args=(release,))

    async def go() -> None:
        async with Session(backends=[backend], work_dir=tmp_path) as s:
            await s.submit_tasks([*short, stamped, long])
            try:
                await wait_for_state(long, TaskState.RUNNING, timeout=30)
                await asyncio.wait_for(asyncio.shield(stamped.future), 30)  # type: ignore[arg-type]
                assert long.state is TaskState.RUNNING
                assert seen[stamped.uid] == ["SUBMITTED", "RUNNING", "DONE"]
            finally:
                release.set()
            await long

    run(go())
    ended = marks[1]
    assert stamped.timestamps["RUNNING"] <= ended <= stamped.timestamps["DONE"] <= long.timestamps["RUNNING"]
    assert all(t.state is TaskState.DONE for t in short)
