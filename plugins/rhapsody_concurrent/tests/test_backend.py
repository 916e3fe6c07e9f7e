"""What only the concurrent backend does: core-slot accounting, process trees,
local multi-rank executables, user executors."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from rhapsody import AITask, BackendError, ComputeTask, ResourceError, Resources, Session, TaskState
from rhapsody.testing.conformance import pid_alive, wait_for_file, wait_for_state, wait_until_gone
from rhapsody.testing.tasks import getpid, sleep
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_cancel_kills_the_whole_process_tree(tmp_path: Path) -> None:
    child = tmp_path / "child"
    task = ComputeTask(executable="/bin/sh", arguments=["-c", f"sleep 60 & echo $! > {child}; wait"])

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as s:
            await s.submit_tasks([task])
            pid = int(await wait_for_file(child))
            assert pid_alive(pid)
            assert await s.cancel_tasks([task]) == [True]
            await wait_until_gone(pid)

    run(go())
    assert task.state is TaskState.CANCELED


def test_never_more_cores_than_it_has(tmp_path: Path) -> None:
    """Two 1-core tasks run together on 2 cores; a 2-core task waits for both."""
    marks = [tmp_path / f"m{i}" for i in range(3)]
    one = [ComputeTask(executable="/bin/sh", arguments=["-c", f"date +%s%N > {m}; sleep 2"]) for m in marks[:2]]
    two = ComputeTask(executable="/bin/sh", arguments=["-c", f"date +%s%N > {marks[2]}"], resources=Resources(cores_per_rank=2))

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as s:
            await s.submit_tasks([*one, two])
            for t in one:
                await wait_for_state(t, TaskState.RUNNING, timeout=30)
            assert [t.state for t in one] == [TaskState.RUNNING, TaskState.RUNNING]
            assert two.state is TaskState.SUBMITTED
            await s.wait_tasks([*one, two])

    run(go())
    assert all(t.state is TaskState.DONE for t in [*one, two])
    assert two.timestamps["RUNNING"] >= max(t.timestamps["DONE"] for t in one)


def test_multi_rank_executable_runs_one_process_per_rank(tmp_path: Path) -> None:
    task = ComputeTask(
        executable="/bin/sh", arguments=["-c", 'echo "rank $RHAPSODY_RANK of $RHAPSODY_RANKS"'], resources=Resources(ranks=2)
    )

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as s:
            await s.submit_tasks([task])
            await task

    run(go())
    assert sorted(task.stdout.splitlines()) == ["rank 0 of 2", "rank 1 of 2"]


def test_multi_rank_function_is_refused_clearly(tmp_path: Path) -> None:
    task = ComputeTask(function=getpid, resources=Resources(ranks=2))

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as s:
            await s.submit_tasks([task])
            await s.wait_tasks([task])

    run(go())
    # a ResourceError: what the task asks for, not engine trouble (a retry would fail the same way)
    assert task.state is TaskState.FAILED and isinstance(task.exception, ResourceError)
    assert "multi-rank" in str(task.exception)


def test_ai_tasks_are_refused_clearly(tmp_path: Path) -> None:
    task = AITask(prompt="hello", model="tiny")

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend()], work_dir=tmp_path) as s:
            await s.submit_tasks([task])
            await s.wait_tasks([task])

    run(go())
    assert task.state is TaskState.FAILED and "cannot run ai tasks" in str(task.exception)


def test_process_pool_runs_lambdas_and_closures(tmp_path: Path) -> None:
    base = 40
    closure = ComputeTask(function=lambda x: x + base, args=(2,))
    pid = ComputeTask(function=getpid)
    pool = ProcessPoolExecutor(max_workers=2)

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(executor=pool)], work_dir=tmp_path) as s:
            await s.submit_tasks([closure, pid])
            await s.wait_tasks([closure, pid])

    try:
        run(go())
        assert closure.return_value == 42
        assert pid.return_value != os.getpid()
        assert closure.worker == pid.worker == f"{socket.gethostname()}/process pool"
        # the user's pool is theirs: still usable after the backend shut down
        assert pool.submit(int, "7").result(timeout=30) == 7
    finally:
        pool.shutdown()


def test_user_thread_pool_sets_the_core_count(tmp_path: Path) -> None:
    pool = ThreadPoolExecutor(max_workers=3)
    backend = ConcurrentExecutionBackend(executor=pool)
    assert backend.capacity().cores == 3
    tasks = [ComputeTask(function=sleep, args=(0.3,)) for _ in range(3)]

    async def go() -> None:
        async with Session(backends=[backend], work_dir=tmp_path) as s:
            await s.submit_tasks(tasks)
            for t in tasks:
                await wait_for_state(t, TaskState.RUNNING, TaskState.DONE, timeout=10)
            await s.wait_tasks(tasks)

    run(go())
    pool.shutdown()
    assert all(t.state is TaskState.DONE for t in tasks)


def test_worker_names_the_thread_or_the_process(tmp_path: Path) -> None:
    """``task.worker``: this host and the pool thread that ran a function; the
    pid of an executable's process (the pid the program itself sees)."""
    pid_file = tmp_path / "pid"
    threaded = [ComputeTask(function=sleep, args=(0.2,)) for _ in range(2)]
    program = ComputeTask(executable="/bin/sh", arguments=["-c", f"echo $$ > {pid_file}"])

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2, name="here")], work_dir=tmp_path) as s:
            await s.submit_tasks([*threaded, program])
            await s.wait_tasks([*threaded, program])

    run(go())
    host = socket.gethostname()
    assert {t.worker for t in threaded} <= {f"{host}/rhapsody-here-0", f"{host}/rhapsody-here-1"}  # a pool of two threads
    assert program.worker == f"{host}/pid {int(pid_file.read_text())}"


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match="Executor"):
        ConcurrentExecutionBackend(executor="threads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cores"):
        ConcurrentExecutionBackend(cores=0)


def test_seed_api_names() -> None:
    from rhapsody.backends import ConcurrentExecutionBackend as Resolved

    assert Resolved is ConcurrentExecutionBackend

    async def go() -> None:
        backend = await ConcurrentExecutionBackend(name="local")
        assert backend.state() == "RUNNING" and backend.name == "local"
        async with backend:
            pass
        assert backend.state() == "STOPPED"

    run(go())


def test_timeout_counts_from_running_not_from_submission(tmp_path: Path) -> None:
    """A task queued behind others is not charged for its wait."""
    blockers = [ComputeTask(function=sleep, args=(1.0,)) for _ in range(2)]
    late = ComputeTask(function=sleep, args=(0.1,), timeout=0.8)

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as s:
            t0 = time.monotonic()
            await s.submit_tasks([*blockers, late])
            await s.wait_tasks([*blockers, late])
            assert time.monotonic() - t0 >= 1.0

    run(go())
    assert late.state is TaskState.DONE, late.exception


def test_cancelled_async_function_really_stops(tmp_path: Path) -> None:
    """An async function on the thread pool is cancelled on its worker's loop:
    its core is free again at once, not after the function's natural end."""
    from rhapsody.testing.tasks import async_sleep

    long = ComputeTask(function=async_sleep, args=(60,))
    after = ComputeTask(function=getpid)

    async def go() -> float:
        async with Session(backends=[ConcurrentExecutionBackend(cores=1)], work_dir=tmp_path) as s:
            await s.submit_tasks([long])
            await wait_for_state(long, TaskState.RUNNING, timeout=10)
            assert await s.cancel_tasks([long]) == [True]
            t0 = time.monotonic()
            await s.submit_tasks([after])
            await after
            return time.monotonic() - t0

    waited = run(go())
    assert long.state is TaskState.CANCELED
    assert waited < 30, "the one core stayed busy: the async function kept running"


def _exit_worker() -> None:
    os._exit(3)


def _plus_one(x: int) -> int:
    time.sleep(0.2)
    return x + 1


def test_dead_pool_worker_fails_only_its_task(tmp_path: Path) -> None:
    """One task kills its process-pool worker: it alone FAILS, naming the dead
    worker; the tasks beside it and after it run in a replacement pool."""
    pool = ProcessPoolExecutor(max_workers=2)
    killer = ComputeTask(function=_exit_worker)
    beside = [ComputeTask(function=_plus_one, args=(i,)) for i in range(5)]

    async def go() -> list[ComputeTask]:
        async with Session(backends=[ConcurrentExecutionBackend(executor=pool)], work_dir=tmp_path) as s:
            await s.submit_tasks([killer, *beside])
            await s.wait_tasks([killer, *beside], timeout=60)
            later = [ComputeTask(function=_plus_one, args=(i,)) for i in range(10, 13)]
            await s.submit_tasks(later)
            await s.wait_tasks(later, timeout=60)
            return later

    later = run(go())
    pool.shutdown(wait=False)
    assert killer.state is TaskState.FAILED
    assert isinstance(killer.exception, BackendError) and "worker process" in str(killer.exception)
    assert [(t.state, t.return_value) for t in beside] == [(TaskState.DONE, i + 1) for i in range(5)]
    assert [t.return_value for t in later] == [11, 12, 13]


_NEVER_RETURNS = """
import asyncio, sys, time
from rhapsody import ComputeTask, Session
from rhapsody_concurrent.backend import ConcurrentExecutionBackend

def forever():
    while True:
        time.sleep(0.05)

async def main():
    async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=sys.argv[1]) as s:
        timed, cancelled = ComputeTask(function=forever, timeout=0.5), ComputeTask(function=forever)
        await s.submit_tasks([timed, cancelled])
        await s.wait_tasks([timed], timeout=30)
        await s.cancel_tasks([cancelled])
        print(timed.state, cancelled.state, flush=True)

asyncio.run(main())
"""


def test_program_exits_after_a_function_that_never_returns(tmp_path: Path) -> None:
    """A thread-pool function cannot be interrupted: timed out or cancelled, it
    is abandoned, and it must not keep the program from exiting."""
    import subprocess
    import sys

    script = tmp_path / "never.py"
    script.write_text(_NEVER_RETURNS)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["FAILED", "CANCELED"]
    assert time.monotonic() - t0 < 30


def test_default_cores_are_the_nodes_usable_cores() -> None:
    """One answer to "how many cores": CPU affinity and cgroup limits (core_count)."""
    from rhapsody.engine import core_count

    capacity = ConcurrentExecutionBackend().capacity()
    assert capacity is not None
    assert capacity.cores == capacity.cores_per_rank == core_count()
    assert 1 <= core_count() <= len(os.sched_getaffinity(0))


def _meet(barrier: threading.Barrier) -> int:
    return barrier.wait()  # BrokenBarrierError after its timeout if the others never run beside it


def test_functions_that_block_all_run_at_once_up_to_cores(tmp_path: Path) -> None:
    """One pool job takes functions; more start only when the jobs there stay inside
    their functions: blocking functions must still get all `cores` threads (each
    waits for the others)."""
    cores = 4
    barrier = threading.Barrier(cores, timeout=60)
    tasks = [ComputeTask(function=_meet, args=(barrier,)) for _ in range(cores)]

    async def go(pool: ThreadPoolExecutor) -> None:
        async with Session(backends=[ConcurrentExecutionBackend(pool)], work_dir=tmp_path) as s:
            await s.submit_tasks(tasks)
            await s.wait_tasks(tasks)

    with ThreadPoolExecutor(cores) as pool:
        run(go(pool))
    assert [t.state for t in tasks] == [TaskState.DONE] * cores, [t.exception for t in tasks]
    assert sorted(t.return_value for t in tasks) == list(range(cores))


def _hold(release: threading.Event) -> bool:
    return release.wait(60)


def test_short_functions_pass_a_blocked_one(tmp_path: Path) -> None:
    """A function that blocks keeps its pool thread, not the queue: functions
    submitted after it, in calls of their own, end while it still blocks."""
    release = threading.Event()
    blocked = ComputeTask(function=_hold, args=(release,))
    later = [ComputeTask(function=getpid) for _ in range(50)]

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as s:
            await s.submit_tasks([blocked])
            await wait_for_state(blocked, TaskState.RUNNING)
            for task in later:
                await s.submit_tasks([task])
            try:
                await asyncio.wait_for(s.wait_tasks(later), 30)
                assert not blocked.done  # still inside its function
            finally:
                release.set()
            await s.wait_tasks([blocked])

    run(go())
    assert [t.state for t in later] == [TaskState.DONE] * len(later)
    assert blocked.state is TaskState.DONE and blocked.return_value is True
