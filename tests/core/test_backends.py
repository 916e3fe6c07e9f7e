"""`rhapsody.backends`: lazy class resolution, and what `rhapsody.Backend`
guarantees around every engine (lifecycle and its deadlines, validation,
reporting through task handles, cancellation)."""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from toys import AsyncioEngine, ManualEngine, Recorder, manual_backend, run

import rhapsody
from rhapsody import (
    AITask,
    Backend,
    BackendError,
    ComputeTask,
    ResourceError,
    TaskCanceledError,
    TaskExecutionError,
    TaskState,
    TaskTimeoutError,
    hookimpl,
)
from rhapsody.backends import BackendState
from rhapsody.engine import EngineContext, TaskHandle
from rhapsody.registry import get_plugin_manager
from rhapsody.testing import tasks as fn
from rhapsody.testing.waiting import wait_for_state

HERE = Path(__file__).parent


# ------------------------------------------------------------------ lazy resolution
def test_concurrent_class_resolves_through_the_registry(fresh_plugins: None) -> None:
    from rhapsody.backends import ConcurrentExecutionBackend
    from rhapsody_concurrent.backend import ConcurrentExecutionBackend as Direct

    assert ConcurrentExecutionBackend is Direct
    assert issubclass(ConcurrentExecutionBackend, Backend) and rhapsody.backends.Backend is Backend
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
        Backend(AsyncioEngine(), "")
    with pytest.raises(ValueError):
        Backend(AsyncioEngine(), None)  # type: ignore[arg-type]


def test_start_once_and_shutdown_idempotent() -> None:
    engine = AsyncioEngine()
    backend = Backend(engine, "life")
    assert backend.state() == "NEW" and "life" in repr(backend) and "asyncio" in repr(backend)

    async def go() -> None:
        results = await asyncio.gather(backend.start(), backend.start(), backend.start())
        assert all(r is backend for r in results)
        assert await backend is backend
        assert engine.started == 1 and backend.state() == "RUNNING"
        await backend.shutdown()
        await backend.shutdown()
        assert engine.stopped == 1 and backend.state() == BackendState.STOPPED.value
        with pytest.raises(BackendError, match="shut down"):
            await backend.start()
        with pytest.raises(BackendError):
            await backend.submit_tasks([ComputeTask(function=fn.noop)])

    run(go())


def test_never_started_backend_shuts_down_without_stop() -> None:
    engine = AsyncioEngine()
    backend = Backend(engine, "idle")
    run(backend.shutdown())
    assert backend.state() == "STOPPED" and engine.stopped == 0


def test_submit_starts_the_backend() -> None:
    engine = AsyncioEngine()
    backend = Backend(engine, "lazy")
    t = ComputeTask(function=fn.add, args=(1, 1))

    async def go() -> None:
        await backend.submit_tasks([t])
        await t
        await backend.shutdown()

    run(go())
    assert engine.started == 1 and t.return_value == 2


class FailingStart(AsyncioEngine):
    async def start(self, context: EngineContext) -> None:
        raise ConnectionError("engine unreachable")


def test_failed_start_raises_and_cleans_up() -> None:
    engine = FailingStart()
    backend = Backend(engine, "down")

    async def go() -> None:
        with pytest.raises(ConnectionError, match="unreachable"):
            await backend
        assert backend.state() == "FAILED"
        assert engine.stopped == 1, "stop runs after a failed start"
        with pytest.raises(ConnectionError):
            await backend.submit_tasks([ComputeTask(function=fn.noop)])

    run(go())


class HangingEngine(AsyncioEngine):
    """An engine whose start or stop never returns (a cluster that never answers)."""

    engine_name = "hanger"

    def __init__(self, hang_in: str) -> None:
        super().__init__()
        self.hang_in = hang_in

    async def start(self, context: EngineContext) -> None:
        if self.hang_in == "start":
            await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped += 1
        if self.hang_in == "stop":
            await asyncio.Event().wait()


def test_start_that_never_returns_fails_within_its_deadline() -> None:
    engine = HangingEngine("start")
    backend = Backend(engine, "stuck", start_timeout=0.5)

    async def go() -> float:
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            await backend
        elapsed = time.monotonic() - t0
        text = str(info.value)
        assert "hanger" in text and "'stuck'" in text and "start" in text and "0.5 s" in text
        assert backend.state() == "FAILED" and engine.stopped == 1
        return elapsed

    assert run(go()) < 10


def test_stop_that_never_returns_fails_within_its_deadline() -> None:
    class SlowStop(HangingEngine):
        stop_timeout = 0.4  # the engine's own default, used when the backend gives none

    engine = SlowStop("stop")
    backend = Backend(engine, "sticky")

    async def go() -> float:
        await backend
        t = ComputeTask(function=fn.noop)
        await backend.submit_tasks([t])
        await t
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            await backend.shutdown()
        text = str(info.value)
        assert "hanger" in text and "stop" in text and "0.4 s" in text
        assert backend.state() == "STOPPED"
        return time.monotonic() - t0

    assert run(go()) < 10


# ------------------------------------------------------------------ submission
def test_resource_and_kind_rejections_fail_only_those_tasks() -> None:
    ok = ComputeTask(function=fn.add, args=(1, 2))
    big = ComputeTask(function=fn.noop, resources={"ranks": 1, "cores_per_rank": 3}, uid="too-big")
    ai = AITask(prompt="hi", model="m")

    async def go() -> None:
        async with Backend(AsyncioEngine(cores=2), "small") as backend:
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


class RefusingEngine(AsyncioEngine):
    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        raise OSError("queue full")


def test_engine_refusing_a_batch_fails_its_tasks() -> None:
    tasks = [ComputeTask(function=fn.noop) for _ in range(3)]

    async def go() -> None:
        async with Backend(RefusingEngine(), "refuser") as backend:
            await backend.submit_tasks(tasks)

    run(go())
    for t in tasks:
        assert t.state is TaskState.FAILED and isinstance(t.exception, BackendError)
        assert isinstance(t.exception.__cause__, OSError) and "queue full" in str(t.exception)


def test_bad_input_raises_before_anything_is_submitted() -> None:
    good = ComputeTask(function=fn.noop)

    async def go() -> None:
        backend, engine = manual_backend("m")
        async with backend:
            with pytest.raises(rhapsody.TaskValidationError):
                await backend.submit_tasks([good, 42])  # type: ignore[list-item]
            with pytest.raises(rhapsody.TaskValidationError) as info:
                await backend.submit_tasks([good, {"uid": "d1", "executable": "x", "timeout": -1}])
            assert info.value.uid == "d1"
            assert engine.received == [] and good.state is TaskState.NEW and good.future is None

    run(go())


# ------------------------------------------------------------------ reporting
def test_nonzero_exit_is_a_task_execution_error() -> None:
    async def go() -> ComputeTask:
        backend, engine = manual_backend("m")
        async with backend:
            t = ComputeTask(executable="/bin/prog", uid="exit3")
            await backend.submit_tasks([t])
            handle = engine.handles["exit3"]
            assert handle.task is t and handle.launch is not None and handle.launch.argv == ["/bin/prog"]
            handle.running()
            handle.done(exit_code=3, stdout="out", stderr="x" * 5000 + "LAST LINE")
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
        async with Backend(AsyncioEngine(), "asyncio") as backend:
            await backend.submit_tasks([t])
            with pytest.raises(fn.TaskBoom, match="kaput"):
                await t

    run(go())
    assert t.state is TaskState.FAILED and "TaskBoom" in t.stderr and "Traceback" in t.stderr


class ThreadSpy:
    """An observer noting the thread each transition is announced on."""

    def __init__(self) -> None:
        self.threads: list[tuple[str, int]] = []

    @hookimpl
    def rhapsody_task_state_changed(self, task: Any, new_state: TaskState) -> None:
        self.threads.append((new_state.value, threading.get_ident()))


def test_reports_from_other_threads_hop_to_the_loop() -> None:
    spy = ThreadSpy()
    pm = get_plugin_manager()

    async def go() -> ComputeTask:
        backend, engine = manual_backend("m")
        async with backend:
            t = ComputeTask(executable="/bin/true")
            await backend.submit_tasks([t])
            handle = engine.handles[t.uid]

            def engine_thread() -> None:
                handle.running()
                handle.done(exit_code=0, stdout="from a thread")

            pm.register(spy)
            try:
                worker = threading.Thread(target=engine_thread)
                worker.start()
                worker.join()
                await asyncio.wait([t.future], timeout=30)  # type: ignore[list-item]
            finally:
                pm.unregister(spy)
            return t

    t = run(go())
    assert t.state is TaskState.DONE and t.stdout == "from a thread"
    assert spy.threads == [("RUNNING", threading.get_ident()), ("DONE", threading.get_ident())], "state changes happen on the loop thread"


def test_reports_from_many_threads_all_arrive_in_order(recorder: Recorder) -> None:
    """Each task is reported by its own thread (RUNNING, then DONE, then late
    reports that must be dropped), many threads at once; `call_soon` from the
    same thread runs after the reports made before it."""
    n_threads, per_thread = 8, 40
    after_done: list[str] = []

    async def go() -> list[ComputeTask]:
        backend, engine = manual_backend("many")
        async with backend:
            tasks = [ComputeTask(function=fn.noop, uid=f"many.{i}") for i in range(n_threads * per_thread)]
            await backend.submit_tasks(tasks)
            assert engine.context is not None
            call_soon = engine.context.call_soon
            gate = threading.Barrier(n_threads)

            def engine_thread(k: int) -> None:
                gate.wait()
                for t in tasks[k::n_threads]:
                    handle = engine.handles[t.uid]
                    handle.running()
                    handle.done(int(t.uid.split(".")[1]))
                    handle.failed(RuntimeError("late"))  # dropped: the task already ended
                    handle.running()
                    call_soon(lambda t=t: after_done.append(t.state.value))

            workers = [threading.Thread(target=engine_thread, args=(k,)) for k in range(n_threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            await asyncio.wait([t.future for t in tasks], timeout=30)  # type: ignore[misc]
            await asyncio.sleep(0.05)
            return tasks

    tasks = run(go())
    for i, t in enumerate(tasks):
        assert t.state is TaskState.DONE and t.return_value == i and t.exception is None
        assert recorder.states_of(t.uid) == ["SUBMITTED", "RUNNING", "DONE"], t.uid
    assert after_done == ["DONE"] * len(tasks)


def test_report_after_the_loop_is_gone_is_dropped() -> None:
    backend, engine = manual_backend("m")
    t = ComputeTask(executable="/bin/true")

    async def go() -> None:
        await backend.start()
        await backend.submit_tasks([t])

    run(go())  # the loop is closed now; the engine reports late from its own thread
    errors: list[BaseException] = []

    def late() -> None:
        try:
            engine.handles[t.uid].done(exit_code=0)
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
    exe = ComputeTask(executable="/bin/sleep", arguments=["60"])

    async def go() -> None:
        async with Backend(AsyncioEngine(), "asyncio") as backend:
            await backend.submit_tasks([cancelled, timed, exe])
            assert await backend.cancel_tasks([cancelled.uid, exe]) == [True, True]
            with pytest.raises(TaskCanceledError):
                await cancelled
            with pytest.raises(TaskCanceledError):
                await exe
            with pytest.raises(TaskTimeoutError) as info:
                await timed
            assert info.value.uid == timed.uid and info.value.timeout == 0.2
            assert await backend.cancel_all_tasks() == 0
            assert await backend.cancel_task(cancelled.uid) is False

    run(go())
    assert cancelled.state is TaskState.CANCELED and cancelled.exception is None
    assert timed.state is TaskState.FAILED


def test_shutdown_cancels_tasks_in_flight() -> None:
    tasks = [ComputeTask(function=fn.async_sleep, args=(60,)) for _ in range(3)]
    manual = ComputeTask(executable="/bin/true")

    async def go() -> None:
        backend = Backend(AsyncioEngine(), "asyncio")
        other, engine = manual_backend("engine-never-answers")
        engine.cancel_mode = "refused"
        async with backend, other:
            await backend.submit_tasks(tasks)
            await other.submit_tasks([manual])
            assert backend.get_task(tasks[0].uid) is tasks[0]
        for t in tasks:
            with pytest.raises(TaskCanceledError):
                await t
        assert backend.get_task(tasks[0].uid) is None and other.get_task(manual.uid) is None

    run(go())
    assert all(t.state is TaskState.CANCELED for t in tasks)
    assert manual.state is TaskState.CANCELED, "after shutdown nothing can report again: in-flight tasks end CANCELED"


# ------------------------------------------------------------------ dicts and callbacks (radical.asyncflow)
def test_dict_tasks_and_callbacks() -> None:
    desc: dict[str, Any] = {"uid": "flow.7", "function": fn.add, "args": (3, 4), "kwargs": {}, "name": "add"}
    calls: list[tuple[Any, str]] = []

    async def go() -> None:
        async with Backend(AsyncioEngine(), "asyncio") as backend:
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


def test_work_dir_and_capture_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHAPSODY_WORK_DIR", str(tmp_path / "base"))
    backend, engine = manual_backend("m")
    assert backend.work_dir == tmp_path / "base"
    captured = ComputeTask(executable="/bin/true", uid="art", capture_stdio=True)
    plain = ComputeTask(executable="/bin/true", uid="plain")

    async def go() -> None:
        async with backend:
            await backend.submit_tasks([captured, plain])
            backend.work_dir = tmp_path / "elsewhere"
            await backend.submit_tasks([ComputeTask(executable="/bin/true", uid="art2", capture_stdio=True)])

    run(go())
    spec = engine.handles["art"].launch
    assert spec is not None and spec.stdout_path == str(tmp_path / "base" / "art.stdout")
    assert spec.stderr_path == str(tmp_path / "base" / "art.stderr") and (tmp_path / "base").is_dir()
    assert engine.handles["plain"].launch.stdout_path is None  # type: ignore[union-attr]
    assert engine.handles["art2"].launch.stdout_path == str(tmp_path / "elsewhere" / "art2.stdout")  # type: ignore[union-attr]
    monkeypatch.delenv("RHAPSODY_WORK_DIR")
    assert Backend(ManualEngine(), "n").work_dir == Path(os.getcwd())


def test_asyncflow_drives_a_core_backend() -> None:
    from radical.asyncflow import WorkflowEngine

    async def go() -> tuple[Any, Any]:
        backend = Backend(AsyncioEngine(), "flow")
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


# ------------------------------------------------------------------ no private names needed
def _private_uses(path: Path) -> list[str]:
    """Private names (``_x``, not dunders) a module reaches on anything but
    ``self`` / ``cls``, or imports from rhapsody."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        private = isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
        if private and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):  # type: ignore[attr-defined]
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")  # type: ignore[attr-defined]
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rhapsody"):
            found += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")]
            if any(part.startswith("_") for part in (node.module or "").split(".")):
                found.append(f"{path.name}:{node.lineno}: from {node.module}")
    return found


def test_engines_and_tests_use_no_private_name() -> None:
    """The toy engines implement the whole contract, and the tests check
    everything, through public names only."""
    files = [HERE / "toys.py", HERE / "conftest.py", *sorted(HERE.glob("test_*.py"))]
    assert [u for f in files for u in _private_uses(f)] == []


def test_worker_reported_at_running_lands_on_the_task() -> None:
    """``handle.running(worker)`` from an engine thread: the task says where it
    ran from RUNNING on; a bad value is refused where the engine made it, and
    nothing is lost (the task still runs to its end)."""

    async def go() -> tuple[ComputeTask, Any, list[str]]:
        backend, engine = manual_backend("m")
        async with backend:
            t = ComputeTask(executable="/bin/true")
            await backend.submit_tasks([t])
            handle = engine.handles[t.uid]
            refused: list[str] = []
            for bad in ("", 7, b"node1"):
                try:
                    handle.running(bad)  # type: ignore[arg-type]
                except TypeError as exc:
                    refused.append(str(exc))
            worker = threading.Thread(target=handle.running, args=("node1/pid 42",))
            worker.start()
            worker.join()
            await wait_for_state(t, TaskState.RUNNING, timeout=30)
            at_running = t.worker
            handle.done(exit_code=0)
            await asyncio.wait([t.future], timeout=30)  # type: ignore[list-item]
            return t, at_running, refused

    t, at_running, refused = run(go())
    assert len(refused) == 3 and all(t.uid in r and "non-empty str" in r for r in refused)
    assert at_running == t.worker == "node1/pid 42" and t.state is TaskState.DONE
    assert dict(t)["worker"] == "node1/pid 42"


def test_a_state_observer_that_raises_does_not_stop_the_task_and_can_be_removed() -> None:
    backend, engine = manual_backend("observed")
    seen: list[str] = []

    def observer(b: Any, task: Any, old: TaskState, new: TaskState) -> None:
        seen.append(new.value)
        raise RuntimeError("a broken observer")

    backend.add_state_observer(observer)
    backend.add_state_observer(observer)  # once is enough: added once
    first, second = ComputeTask(function=fn.noop), ComputeTask(function=fn.noop)

    async def go() -> None:
        async with backend:
            await backend.submit_tasks([first])
            engine.handles[first.uid].running()
            engine.handles[first.uid].done(1)
            assert (await first).return_value == 1
            backend.remove_state_observer(observer)
            await backend.submit_tasks([second])
            engine.handles[second.uid].done(2)
            assert (await second).return_value == 2

    run(go())
    assert seen == ["SUBMITTED", "RUNNING", "DONE"]


def test_an_end_listener_that_raises_does_not_keep_the_task_waiting() -> None:
    backend, engine = manual_backend("listened")
    heard: list[str] = []

    def listener(task: Any) -> None:
        heard.append(task.uid)
        raise RuntimeError("a broken listener")

    backend.add_end_listener(listener)
    first, second = ComputeTask(function=fn.noop), ComputeTask(function=fn.noop)

    async def go() -> None:
        async with backend:
            await backend.submit_tasks([first, second])
            engine.handles[first.uid].done(1)
            engine.handles[second.uid].done(2)
            done = await asyncio.wait_for(asyncio.gather(first, second), 30)  # type: ignore[arg-type]
            assert [t.return_value for t in done] == [1, 2]

    run(go())
    assert heard == [first.uid, second.uid]
    assert (first.state, second.state) == (TaskState.DONE, TaskState.DONE)
