"""Function tasks on one real local.localhost pilot with raptor (one 1-core
worker): what the worker does when a call process dies or is cancelled, and
what one bad task does to the others of its batch (issue #11, items 2 and 5).

The pilot declares 4 cores on this 2-core box (``local_cores=4``): raptor's
master and worker hold two, executables get the other two."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest
from procs import assert_nothing_left, group_members, raptor_processes

from rhapsody import BackendError, ComputeTask, Session, TaskState
from rhapsody.testing import tasks as fn
from rhapsody.testing.conformance import LoopRunner, wait_for_state
from rhapsody_radical.backend import RadicalExecutionBackend


@pytest.fixture(scope="module")
def run() -> Iterator[LoopRunner]:
    runner = LoopRunner(deadline=300.0)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def session(run: LoopRunner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    baseline = group_members()
    backend = RadicalExecutionBackend(resources={"runtime": 15, "cores": 4}, local_cores=4, raptor={"eager": True})
    session = Session([backend], work_dir=tmp_path_factory.mktemp("raptor"))
    run(session.start())
    yield session
    run(session.close())
    assert_nothing_left(baseline, backend.rp_session.uid)


def _run(run: LoopRunner, session: Session, tasks: list[ComputeTask], timeout: float = 120.0) -> None:
    async def go() -> None:
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=timeout)

    run(go())


def test_a_call_that_kills_its_process_fails_naming_the_worker_and_later_calls_run(run: LoopRunner, session: Session) -> None:
    """``os._exit(3)`` ends the process raptor runs the call in without a
    result. Before: the task stayed RUNNING forever, the worker's core was
    never freed and every later function hung too."""
    dead = ComputeTask(function=os._exit, args=(3,))
    _run(run, session, [dead])
    assert dead.state is TaskState.FAILED, dead.state
    assert isinstance(dead.exception, BackendError), repr(dead.exception)
    message = str(dead.exception)
    assert dead.uid in message and "raptor worker raptor." in message and "exited with code 3" in message, message
    later = [ComputeTask(function=fn.add, args=(i, 1)) for i in range(3)]  # more than the worker's one core
    _run(run, session, later)
    assert [(t.state, t.return_value) for t in later] == [(TaskState.DONE, i + 1) for i in range(3)]


def test_a_cancelled_running_call_frees_its_core(run: LoopRunner, session: Session) -> None:
    """Before: the call process was killed from outside and RP's worker never
    freed its core, so the next function never ran."""
    long = ComputeTask(function=fn.sleep, args=(300,))

    async def go() -> None:
        await session.submit_tasks([long])
        await wait_for_state(long, TaskState.RUNNING, timeout=120)
        await asyncio.sleep(5)  # RUNNING means raptor took it: give the worker time to start the call
        assert await session.cancel_tasks([long]) == [True]

    run(go())
    assert long.state is TaskState.CANCELED
    after = ComputeTask(function=fn.add, args=(2, 2))
    _run(run, session, [after], timeout=60)
    assert after.state is TaskState.DONE and after.return_value == 4


def test_a_dead_worker_fails_its_calls_and_a_new_worker_runs_later_ones(run: LoopRunner, session: Session) -> None:
    """The worker process itself is killed (not the call it runs): the call
    it held fails naming the worker, and a new worker takes later calls."""
    backend = next(iter(session.backends.values()))
    assert isinstance(backend, RadicalExecutionBackend)
    held = ComputeTask(function=fn.sleep, args=(300,))

    async def go() -> None:
        await session.submit_tasks([held])
        await wait_for_state(held, TaskState.RUNNING, timeout=120)
        await asyncio.sleep(5)  # the worker has taken the call
        (worker,) = raptor_processes(backend.rp_session.uid, "worker")
        worker.kill()
        await session.wait_tasks([held], timeout=120)

    run(go())
    assert held.state is TaskState.FAILED, held.state
    assert isinstance(held.exception, BackendError) and "raptor worker raptor." in str(held.exception), repr(held.exception)
    later = ComputeTask(function=fn.add, args=(5, 5))
    _run(run, session, [later], timeout=180)
    assert later.state is TaskState.DONE and later.return_value == 10, later.exception


def test_one_unpicklable_argument_fails_only_its_own_task(run: LoopRunner, session: Session) -> None:
    """Before: the whole submit_tasks call failed (every task FAILED)."""
    bad = ComputeTask(function=fn.add, args=(threading.Lock(), 1))
    good = [ComputeTask(function=fn.add, args=(i, 10)) for i in range(3)]
    exe = ComputeTask(executable="/bin/echo", arguments=["still runs"])
    _run(run, session, [good[0], bad, *good[1:], exe])
    assert bad.state is TaskState.FAILED
    assert isinstance(bad.exception, TypeError), repr(bad.exception)
    assert bad.uid in str(bad.exception) and "args[0] (lock)" in str(bad.exception), str(bad.exception)
    assert [(t.state, t.return_value) for t in good] == [(TaskState.DONE, i + 10) for i in range(3)]
    assert exe.state is TaskState.DONE and exe.stdout.strip() == "still runs"


def test_a_finished_tasks_uid_can_be_used_again(run: LoopRunner, session: Session) -> None:
    """RP refuses a uid it has seen in the session. Before: a new task reusing
    a finished one's uid failed its whole batch ("uid ... is not unique")."""
    first_fn = ComputeTask(function=fn.add, args=(1, 2))
    first_exe = ComputeTask(executable="/bin/echo", arguments=["one"])
    _run(run, session, [first_fn, first_exe])
    assert first_fn.state is TaskState.DONE and first_exe.state is TaskState.DONE
    again_fn = ComputeTask(function=fn.add, args=(2, 2), uid=first_fn.uid)
    again_exe = ComputeTask(executable="/bin/echo", arguments=["two"], uid=first_exe.uid)
    other = ComputeTask(function=fn.add, args=(3, 3))
    _run(run, session, [again_fn, again_exe, other])
    assert (again_fn.state, again_fn.return_value) == (TaskState.DONE, 4), again_fn.exception
    assert again_exe.state is TaskState.DONE and again_exe.stdout.strip() == "two", again_exe.exception
    assert other.state is TaskState.DONE and other.return_value == 6


def test_a_dead_master_fails_its_calls_and_later_functions_with_the_reason(run: LoopRunner, session: Session, tmp_path) -> None:
    """The master is gone: the call it held and every later function task FAIL
    at once naming it (none waits for ever); executables still run."""
    backend = next(iter(session.backends.values()))
    assert isinstance(backend, RadicalExecutionBackend)
    held = ComputeTask(function=fn.sleep, args=(300,))

    async def go() -> None:
        await session.submit_tasks([held])
        await wait_for_state(held, TaskState.RUNNING, timeout=120)
        (master,) = raptor_processes(backend.rp_session.uid, "master")
        master.kill()
        await session.wait_tasks([held], timeout=120)

    run(go())
    assert held.state is TaskState.FAILED, held.state
    assert isinstance(held.exception, BackendError) and "raptor master raptor." in str(held.exception), repr(held.exception)
    later = ComputeTask(function=fn.add, args=(6, 6))
    exe = ComputeTask(executable="/bin/echo", arguments=["still", "runs"])
    _run(run, session, [later, exe], timeout=240)
    assert later.state is TaskState.FAILED and isinstance(later.exception, BackendError), (later.state, later.exception)
    assert "raptor master raptor." in str(later.exception) and "no more function tasks" in str(later.exception)
    assert exe.state is TaskState.DONE and exe.stdout.strip() == "still runs", (exe.state, exe.exception, exe.stderr)
