"""`rhapsody.backends`: lazy class resolution, and what `BaseExecutionBackend`
guarantees to every plugin (lifecycle, validation, reporting, cancellation)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from toys import AsyncioBackend, ManualBackend, run

import rhapsody
from rhapsody import (
    AITask,
    BackendError,
    ComputeTask,
    ResourceError,
    TaskCanceledError,
    TaskExecutionError,
    TaskState,
    TaskTimeoutError,
)
from rhapsody.backends import BackendState, BaseExecutionBackend
from rhapsody.task import BaseTask
from rhapsody.testing import tasks as fn


# ------------------------------------------------------------------ lazy resolution
def test_concurrent_class_resolves_through_the_registry(fresh_plugins: None) -> None:
    from rhapsody.backends import ConcurrentExecutionBackend
    from rhapsody_concurrent.backend import ConcurrentExecutionBackend as Direct

    assert ConcurrentExecutionBackend is Direct
    assert issubclass(ConcurrentExecutionBackend, BaseExecutionBackend)
    assert "ConcurrentExecutionBackend" in dir(rhapsody.backends)
    assert isinstance(rhapsody.get_backend("concurrent"), Direct)


def test_import_and_discovery_do_not_import_backends() -> None:
    code = (
        "import sys, rhapsody, rhapsody.backends\n"
        "assert 'concurrent' in rhapsody.discover_backends()\n"
        "assert 'rhapsody_concurrent.backend' not in sys.modules, 'discovery imported the backend'\n"
        "from rhapsody.backends import ConcurrentExecutionBackend\n"
        "assert 'rhapsody_concurrent.backend' in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------ lifecycle
def test_backend_name_must_be_a_string() -> None:
    with pytest.raises(ValueError):
        AsyncioBackend(name="")
    with pytest.raises(ValueError):
        AsyncioBackend(name=None)  # type: ignore[arg-type]


def test_start_once_and_shutdown_idempotent() -> None:
    backend = AsyncioBackend("life")
    assert backend.state() == "NEW" and "life" in repr(backend)

    async def go() -> None:
        results = await asyncio.gather(backend.start(), backend.start(), backend.start())
        assert all(r is backend for r in results)
        assert await backend is backend
        assert backend.started == 1 and backend.state() == "RUNNING"
        await backend.shutdown()
        await backend.shutdown()
        assert backend.stopped == 1 and backend.state() == BackendState.STOPPED.value
        with pytest.raises(BackendError, match="shut down"):
            await backend.start()
        with pytest.raises(BackendError):
            await backend.submit_tasks([ComputeTask(function=fn.noop)])

    run(go())


def test_never_started_backend_shuts_down_without_stop() -> None:
    backend = AsyncioBackend("idle")
    run(backend.shutdown())
    assert backend.state() == "STOPPED" and backend.stopped == 0


def test_submit_starts_the_backend() -> None:
    backend = AsyncioBackend("lazy")
    t = ComputeTask(function=fn.add, args=(1, 1))

    async def go() -> None:
        await backend.submit_tasks([t])
        await t
        await backend.shutdown()

    run(go())
    assert backend.started == 1 and t.return_value == 2


class FailingStart(AsyncioBackend):
    async def _start(self) -> None:
        raise ConnectionError("engine unreachable")


def test_failed_start_raises_and_cleans_up() -> None:
    backend = FailingStart("down")

    async def go() -> None:
        with pytest.raises(ConnectionError, match="unreachable"):
            await backend
        assert backend.state() == "FAILED"
        assert backend.stopped == 1, "_stop runs after a failed _start"
        with pytest.raises(ConnectionError):
            await backend.submit_tasks([ComputeTask(function=fn.noop)])

    run(go())


# ------------------------------------------------------------------ submission
def test_resource_and_kind_rejections_fail_only_those_tasks() -> None:
    ok = ComputeTask(function=fn.add, args=(1, 2))
    big = ComputeTask(function=fn.noop, resources={"ranks": 1, "cores_per_rank": 3}, uid="too-big")
    ai = AITask(prompt="hi", model="m")

    async def go() -> None:
        async with AsyncioBackend("small", cores=2) as backend:
            returned = await backend.submit_tasks([ok, big, ai])
            assert returned == [ok, big, ai]
            assert big.state is TaskState.FAILED and ai.state is TaskState.FAILED, "rejected at once"
            await ok
            with pytest.raises(ResourceError, match=r"too-big.*3 cores.*2"):
                await big
            with pytest.raises(BackendError, match="cannot run ai tasks"):
                await ai

    run(go())
    assert ok.state is TaskState.DONE and "SUBMITTED" not in big.timestamps


class RefusingEngine(AsyncioBackend):
    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        raise OSError("queue full")


def test_engine_refusing_a_batch_fails_its_tasks() -> None:
    tasks = [ComputeTask(function=fn.noop) for _ in range(3)]

    async def go() -> None:
        async with RefusingEngine("refuser") as backend:
            await backend.submit_tasks(tasks)

    run(go())
    for t in tasks:
        assert t.state is TaskState.FAILED and isinstance(t.exception, BackendError)
        assert isinstance(t.exception.__cause__, OSError) and "queue full" in str(t.exception)


def test_bad_input_raises_before_anything_is_submitted() -> None:
    good = ComputeTask(function=fn.noop)

    async def go() -> None:
        async with ManualBackend("m") as backend:
            with pytest.raises(rhapsody.TaskValidationError):
                await backend.submit_tasks([good, 42])  # type: ignore[list-item]
            with pytest.raises(rhapsody.TaskValidationError) as info:
                await backend.submit_tasks([good, {"uid": "d1", "executable": "x", "timeout": -1}])
            assert info.value.uid == "d1"
            assert backend.received == [] and good.state is TaskState.NEW

    run(go())


# ------------------------------------------------------------------ reporting
def test_nonzero_exit_is_a_task_execution_error() -> None:
    async def go() -> ComputeTask:
        async with ManualBackend("m") as backend:
            t = ComputeTask(executable="/bin/prog", uid="exit3")
            await backend.submit_tasks([t])
            backend.report_running(t)
            backend.report_result(t, exit_code=3, stdout="out", stderr="x" * 5000 + "LAST LINE")
            with pytest.raises(TaskExecutionError) as info:
                await t
            err = info.value
            assert err.exit_code == 3 and err.uid == "exit3" and err.stderr.endswith("LAST LINE")
            assert "/bin/prog" in str(err) and "code 3" in str(err) and "LAST LINE" in str(err)
            assert len(str(err)) < 2500, "the message carries a tail of stderr, not all of it"
            return t

    t = run(go())
    assert t.state is TaskState.FAILED and t.exit_code == 3 and t.stdout == "out"


def test_failure_without_stderr_stores_the_traceback() -> None:
    t = ComputeTask(function=fn.boom, args=("kaput",))

    async def go() -> None:
        async with AsyncioBackend() as backend:
            await backend.submit_tasks([t])
            with pytest.raises(fn.TaskBoom, match="kaput"):
                await t

    run(go())
    assert t.state is TaskState.FAILED and "TaskBoom" in t.stderr and "Traceback" in t.stderr


def test_reports_from_other_threads_hop_to_the_loop() -> None:
    seen_threads: list[int] = []

    async def go() -> ComputeTask:
        async with ManualBackend("m") as backend:
            t = ComputeTask(executable="/bin/true")
            await backend.submit_tasks([t])
            original = backend._set_state

            def spy(task: BaseTask, new: TaskState, **fields: Any) -> bool:
                seen_threads.append(threading.get_ident())
                return original(task, new, **fields)

            backend._set_state = spy  # type: ignore[method-assign]

            def engine_thread() -> None:
                backend.report_running(t)
                backend.report_result(t, exit_code=0, stdout="from a thread")

            worker = threading.Thread(target=engine_thread)
            worker.start()
            worker.join()
            await asyncio.wait_for(asyncio.shield(t._future), 30)
            return t

    t = run(go())
    assert t.state is TaskState.DONE and t.stdout == "from a thread"
    assert seen_threads == [threading.get_ident()] * 2, "state changes happen on the loop thread"


def test_report_after_the_loop_is_gone_is_dropped() -> None:
    backend = ManualBackend("m")
    t = ComputeTask(executable="/bin/true")

    async def go() -> None:
        await backend.start()
        await backend.submit_tasks([t])

    run(go())  # the loop is closed now; the engine reports late from its own thread
    errors: list[BaseException] = []

    def late() -> None:
        try:
            backend.report_result(t, exit_code=0)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=late)
    worker.start()
    worker.join()
    assert errors == [] and t.state is TaskState.SUBMITTED


# ------------------------------------------------------------------ cancel, timeout, shutdown
def test_cancel_and_timeout_on_a_real_asyncio_backend() -> None:
    cancelled = ComputeTask(function=fn.async_sleep, args=(60,))
    timed = ComputeTask(function=fn.async_sleep, args=(60,), timeout=0.2)

    async def go() -> None:
        async with AsyncioBackend() as backend:
            await backend.submit_tasks([cancelled, timed])
            assert await backend.cancel_tasks([cancelled.uid]) == [True]
            with pytest.raises(TaskCanceledError):
                await cancelled
            with pytest.raises(TaskTimeoutError) as info:
                await timed
            assert info.value.uid == timed.uid and info.value.timeout == 0.2
            assert await backend.cancel_all_tasks() == 0

    run(go())
    assert cancelled.state is TaskState.CANCELED and cancelled.exception is None
    assert timed.state is TaskState.FAILED


def test_shutdown_cancels_tasks_in_flight() -> None:
    tasks = [ComputeTask(function=fn.async_sleep, args=(60,)) for _ in range(3)]
    manual = ComputeTask(executable="/bin/true")

    async def go() -> None:
        backend = AsyncioBackend()
        other = ManualBackend("engine-never-answers")
        other.cancel_mode = "refused"
        async with backend, other:
            await backend.submit_tasks(tasks)
            await other.submit_tasks([manual])
        for t in tasks:
            with pytest.raises(TaskCanceledError):
                await t

    run(go())
    assert all(t.state is TaskState.CANCELED for t in tasks)
    assert manual.state is TaskState.CANCELED, "after shutdown nothing can report again: in-flight tasks end CANCELED"


# ------------------------------------------------------------------ dicts and callbacks (radical.asyncflow)
def test_dict_tasks_and_callbacks() -> None:
    desc: dict[str, Any] = {"uid": "flow.7", "function": fn.add, "args": (3, 4), "kwargs": {}, "name": "add"}
    calls: list[tuple[Any, str]] = []

    async def go() -> None:
        async with AsyncioBackend() as backend:
            backend.register_callback(lambda task, state: calls.append((task, state)))
            backend.register_callback(lambda task, state: 1 / 0)  # a broken callback harms nobody
            (t,) = await backend.submit_tasks([desc])
            assert isinstance(t, ComputeTask) and t.uid == "flow.7"
            await t
            assert backend.get_task_states_map().terminal_states == {"DONE", "FAILED", "CANCELED"}

    run(go())
    assert [s for _, s in calls] == ["SUBMITTED", "RUNNING", "DONE"]
    assert all(task is desc for task, _ in calls), "a dict submitter hears about its own dict"
    assert desc["state"] == "DONE" and desc["return_value"] == 7 and desc["exception"] is None


def test_artifact_path_and_work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHAPSODY_WORK_DIR", str(tmp_path / "base"))
    backend = ManualBackend("m")
    assert backend.work_dir == tmp_path / "base"
    t = ComputeTask(executable="/bin/true", uid="art")
    path = backend.artifact_path(t, "out")
    assert path == tmp_path / "base" / "art.out" and path.parent.is_dir()
    backend.work_dir = tmp_path / "elsewhere"
    assert backend.artifact_path(t, "err") == tmp_path / "elsewhere" / "art.err"
    monkeypatch.delenv("RHAPSODY_WORK_DIR")
    assert ManualBackend("n").work_dir == Path(os.getcwd())


def test_asyncflow_drives_a_core_backend() -> None:
    from radical.asyncflow import WorkflowEngine

    async def go() -> tuple[Any, Any]:
        backend = AsyncioBackend("flow")
        await backend
        flow = await WorkflowEngine.create(backend=backend)
        try:

            @flow.function_task
            async def double(x: int) -> int:
                return 2 * x

            @flow.function_task
            async def plus_one(x: int) -> int:
                return x + 1

            first = double(20)
            second = plus_one(first)
            return await first, await second
        finally:
            await flow.shutdown()

    assert run(go()) == (40, 41)
