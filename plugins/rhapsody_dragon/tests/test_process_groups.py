"""Executables on Dragon end, and are stopped, as a whole process group
(issue #11, items 3 and 4): a cancel reaches the program's children, a
background child neither keeps its task running nor outlives it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rhapsody import ComputeTask, Session, TaskState
from rhapsody.testing import LoopRunner
from rhapsody.testing.conformance import pid_alive, wait_for_file, wait_for_state, wait_until_gone
from rhapsody_dragon import DragonExecutionBackendV1, DragonExecutionBackendV2

if TYPE_CHECKING:
    from rhapsody import Backend


def test_v1_cancel_stops_the_children_at_once_and_the_backend_runs_on(tmp_path: Path) -> None:
    """Was: the cancel killed only the shell (its ``sleep`` lived on), blocked 30 s,
    no task started after it, and closing took 90 s."""
    run = LoopRunner(240)
    backend = DragonExecutionBackendV1(name="v1-cancel-tree", num_workers=1)
    child = tmp_path / "child"
    victim = ComputeTask(executable=f"sleep 900 & echo $! > {child}; wait; echo")  # a shell command line
    after = ComputeTask(executable="/bin/echo", arguments=["after"])
    timings: dict[str, float] = {}

    async def go() -> None:
        session = Session([backend], work_dir=tmp_path)
        try:
            await session.submit_tasks([victim])
            pid = int(await wait_for_file(child, 60))
            await wait_for_state(victim, TaskState.RUNNING, timeout=60)
            t0 = time.monotonic()
            assert await session.cancel_tasks([victim]) == [True]
            timings["cancel"] = time.monotonic() - t0
            await wait_until_gone(pid, timeout=10)
            await session.submit_tasks([after])
            await session.wait_tasks([after], timeout=60)
        finally:
            t0 = time.monotonic()
            await session.close()
            timings["close"] = time.monotonic() - t0

    try:
        run(go())
    finally:
        run.close()
    assert victim.state is TaskState.CANCELED
    assert timings["cancel"] < 5, timings
    assert after.state is TaskState.DONE and after.stdout.strip() == "after", (after.state, after.exception)
    assert timings["close"] < 20, timings


@pytest.mark.parametrize(
    "make",
    [
        lambda: DragonExecutionBackendV1(name="v1-background", num_workers=1),
        lambda: DragonExecutionBackendV2(name="v2-background", num_workers=1),
    ],
    ids=["v1", "v2"],
)
def test_background_child_neither_holds_the_task_nor_outlives_it(make: Callable[[], Backend], tmp_path: Path) -> None:
    """Was: the task stayed RUNNING as long as the background ``sleep`` held its output."""
    run = LoopRunner(240)
    child = tmp_path / "child"
    t = ComputeTask(executable="/bin/sh", arguments=["-c", f"sleep 300 & echo $! > {child}; echo started"])
    backend = make()

    async def go() -> None:
        async with Session([backend], work_dir=tmp_path) as session:
            await session.submit_tasks([t])
            await session.wait_tasks([t], timeout=60)
            assert t.state is TaskState.DONE, (t.state, t.exception)
            await wait_until_gone(int(child.read_text()), timeout=10)

    try:
        run(go())
    finally:
        run.close()
    assert t.stdout.strip() == "started"


def test_v1_shutdown_stops_the_children_of_running_tasks(tmp_path: Path) -> None:
    """Closing with tasks in flight leaves no process of theirs behind, children included."""
    run = LoopRunner(240)
    backend = DragonExecutionBackendV1(name="v1-close-tree", num_workers=2)
    children = [tmp_path / f"child{i}" for i in range(2)]
    tasks = [ComputeTask(executable=f"sleep 900 & echo $! > {c}; wait") for c in children]
    queued = ComputeTask(executable="/bin/sh", arguments=["-c", f"echo ran > {tmp_path / 'queued'}"])

    async def go() -> None:
        session = Session([backend], work_dir=tmp_path)
        await session.submit_tasks([*tasks, queued])
        for c in children:
            await wait_for_file(c, 60)
        await session.close()

    try:
        run(go())
    finally:
        run.close()
    assert all(t.state is TaskState.CANCELED for t in [*tasks, queued]), [t.state for t in [*tasks, queued]]
    deadline = time.monotonic() + 10
    pids = [int(c.read_text()) for c in children]
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids)
    assert not (tmp_path / "queued").exists()
