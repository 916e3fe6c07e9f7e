"""The Session over real backends: routing, waiting, cancelling, closing."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from pathlib import Path

import pytest
from toys import AsyncioEngine, Recorder, children_of_this_process, pid_alive, run, wait_for

import rhapsody
from rhapsody import (
    Backend,
    BackendNotFoundError,
    ComputeTask,
    Session,
    TaskCanceledError,
    TaskExecutionError,
    TaskState,
    TaskTimeoutError,
    hookimpl,
)
from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.registry import get_plugin_manager
from rhapsody.testing import tasks as fn


def two_backends() -> list[ConcurrentExecutionBackend]:
    return [ConcurrentExecutionBackend(name="left", cores=2), ConcurrentExecutionBackend(name="right", cores=2)]


def test_routing_by_task_backend(recorder: Recorder, tmp_path: Path) -> None:
    default = ComputeTask(function=fn.add, args=(1, 2))
    left = ComputeTask(executable="/bin/echo", arguments=["L"], backend="left")
    right = ComputeTask(executable="/bin/echo", arguments=["R"], backend="right")
    right_fn = ComputeTask(function=fn.async_add, args=(1, 1), backend="right")

    async def go() -> None:
        async with Session(backends=two_backends(), work_dir=tmp_path) as session:
            assert list(session.backends) == ["left", "right"]
            futures = await session.submit_tasks([default, left, right, right_fn])
            done = await asyncio.gather(*futures)
            assert done == [default, left, right, right_fn]

    run(go())
    ran_on = {uid: b for uid, b, _, new in recorder.transitions if new is TaskState.DONE}
    assert ran_on == {default.uid: "left", left.uid: "left", right.uid: "right", right_fn.uid: "right"}
    assert default.return_value == 3 and right.stdout.strip() == "R" and right_fn.return_value == 2


def test_unknown_backend_fails_fast_and_submits_nothing(recorder: Recorder, tmp_path: Path) -> None:
    ok = ComputeTask(executable="/bin/true", backend="right")
    lost = ComputeTask(executable="/bin/true", backend="nowhere", uid="lost-1")

    async def go() -> None:
        async with Session(backends=two_backends(), work_dir=tmp_path) as session:
            with pytest.raises(BackendNotFoundError) as info:
                await session.submit_tasks([ok, lost])
            text = str(info.value)
            assert "nowhere" in text and "lost-1" in text and "left" in text and "right" in text
            # dict descriptions are routed the same way
            with pytest.raises(BackendNotFoundError):
                await session.submit_tasks([{"executable": "/bin/true", "backend": "nowhere"}])

    run(go())
    assert ok.state is TaskState.NEW and ok.future is None
    assert recorder.transitions == [] and recorder.submits == []


def test_session_without_backends_uses_concurrent(tmp_path: Path) -> None:
    session = Session(work_dir=tmp_path)
    assert session.backends == {}  # until a task needs one: add_backend may still come first
    t = ComputeTask(function=fn.add, args=(2, 5))

    async def go() -> None:
        async with session:
            await session.submit_tasks(t)
            await t

    run(go())
    (backend,) = session.backends.values()
    assert isinstance(backend, ConcurrentExecutionBackend) and backend.name == "concurrent"
    assert t.return_value == 7 and t.backend == "concurrent"


def test_session_without_default_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch, fresh_plugins: None) -> None:
    monkeypatch.setenv("RHAPSODY_DISABLE_PLUGINS", "concurrent")
    from rhapsody.registry import reset_plugins

    reset_plugins()
    session = Session()  # rhapsody-py's shape: Session(), then add_backend(...)
    with pytest.raises(BackendNotFoundError, match="pip install rhapsody-concurrent"):
        run(session.submit_tasks([ComputeTask(function=pow, args=(2, 3))]))


def test_session_without_backends_then_add_backend_routes_there(tmp_path: Path) -> None:
    """rhapsody-py's ``Session()`` + ``add_backend(b)``: tasks go to ``b``, no default backend appears."""
    session = Session(work_dir=tmp_path)
    session.add_backend(Backend(AsyncioEngine(), "mine"))
    task = ComputeTask(function=pow, args=(2, 3))

    async def go() -> None:
        await session.submit_tasks([task])
        await task
        await session.close()

    run(go())
    assert task.backend == "mine" and task.return_value == 8 and list(session.backends) == ["mine"]


def test_backend_names_in_a_session(tmp_path: Path) -> None:
    session = Session(backends=[Backend(AsyncioEngine(), "a")], work_dir=tmp_path)
    with pytest.raises(ValueError, match="already has a backend named 'a'"):
        session.add_backend(Backend(AsyncioEngine(), "a"))
    with pytest.raises(TypeError):
        session.add_backend(object())  # type: ignore[arg-type]
    by_name = Session(backends="concurrent", work_dir=tmp_path)
    assert isinstance(by_name.backends["concurrent"], ConcurrentExecutionBackend)
    backend = session.backends["a"]
    assert backend.is_attached and backend.attached_to == [session.uid]


def test_work_dir_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHAPSODY_WORK_DIR", str(tmp_path / "from-env"))
    session = Session(uid="s-env")
    assert session.work_dir == tmp_path / "from-env" / "s-env"
    explicit = Session(uid="s-arg", work_dir=tmp_path / "given", backends=[ConcurrentExecutionBackend(cores=1)])
    assert explicit.work_dir == tmp_path / "given" / "s-arg"
    monkeypatch.delenv("RHAPSODY_WORK_DIR")
    assert Session(uid="s-cwd").work_dir == Path.cwd() / "s-cwd"
    assert Session().uid != Session().uid

    t = ComputeTask(executable="/bin/sh", arguments=["-c", "echo out; echo err >&2"], capture_stdio=True, uid="cap")

    async def go() -> None:
        async with session:
            await session.submit_tasks([t])
            await t

    run(go())
    assert session.backends["concurrent"].work_dir == session.work_dir  # the default, added at the first task
    out = tmp_path / "from-env" / "s-env" / "cap.stdout"
    assert t.stdout == str(out) and out.read_text() == "out\n"
    assert Path(t.stderr).read_text() == "err\n"


def test_wait_tasks_timeout_and_failures(tmp_path: Path) -> None:
    slow = ComputeTask(executable="/bin/sleep", arguments=["60"])
    failing = ComputeTask(executable="/bin/sh", arguments=["-c", "echo bad >&2; exit 2"])
    raising = ComputeTask(function=fn.boom)

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=3)], work_dir=tmp_path) as session:
            await session.submit_tasks([slow, failing, raising])
            with pytest.raises(TimeoutError):
                await session.wait_tasks([slow, failing], timeout=0.3)
            assert not slow.state.is_terminal, "a wait timeout leaves tasks running"
            assert await session.wait_tasks([failing, raising]) == [failing, raising]
            assert failing.state is TaskState.FAILED and raising.state is TaskState.FAILED
            with pytest.raises(TaskExecutionError):
                await failing
            with pytest.raises(fn.TaskBoom):
                await raising
            assert await session.cancel_tasks([slow]) == [True]
            await session.wait_tasks([slow])
            with pytest.raises(TaskCanceledError):
                await slow
            assert await session.cancel_tasks([slow, failing]) == [False, False]
            assert await session.wait_tasks([]) == []
            with pytest.raises(Exception):  # noqa: B017 - only submitted task objects can be waited for
                await session.wait_tasks([ComputeTask(executable="/bin/true")])

    run(go())
    assert "bad" in failing.stderr and failing.exit_code == 2


def test_an_ended_task_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    """A task that ended DONE and was dropped is freed at once (a task and a future
    resolving with it would be a cycle, left for gc: memory held and a collector's pass
    per task); its future, asked for after the end, is settled as the first one was.
    (A FAILED function's exception holds its traceback's frames: that is a cycle of its own.)"""
    gc.disable()  # only reference counting frees anything in here

    async def one(session: Session, task: ComputeTask) -> weakref.ref[ComputeTask]:
        await session.submit_tasks([task])
        await session.wait_tasks([task])
        return weakref.ref(task)

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as session:
            refs = [await one(session, ComputeTask(function=fn.noop)), await one(session, ComputeTask(function=fn.add, args=(1, 2)))]
            assert [ref() for ref in refs] == [None, None]
            ok, bad = ComputeTask(function=fn.add, args=(1, 2)), ComputeTask(function=fn.boom)
            first = await session.submit_tasks([ok, bad])
            await session.wait_tasks([ok, bad])
            assert ok.future is ok.future and ok.future is not first[0]
            assert ok.future.done() and ok.future.result() is ok and await ok is ok and ok.return_value == 3
            assert isinstance(bad.future.exception(), fn.TaskBoom) and bad.future.exception() is first[1].exception()
            with pytest.raises(fn.TaskBoom):
                await bad
            assert (await asyncio.gather(*first, return_exceptions=True))[0] is ok

    try:
        run(go())
    finally:
        gc.enable()


def test_per_task_timeout(tmp_path: Path) -> None:
    exe = ComputeTask(executable="/bin/sleep", arguments=["60"], timeout=0.3)
    # a thread cannot be interrupted: keep the abandoned call short so the pool's
    # worker thread does not hold up interpreter exit
    func = ComputeTask(function=fn.async_sleep, args=(3,), timeout=0.3)
    quick = ComputeTask(executable="/bin/true", timeout=30)

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(cores=3)], work_dir=tmp_path) as session:
            await session.submit_tasks([exe, func, quick])
            await session.wait_tasks([exe, func, quick])
            for t in (exe, func):
                with pytest.raises(TaskTimeoutError):
                    await t

    run(go())
    for t in (exe, func):
        assert t.state is TaskState.FAILED and isinstance(t.exception, TaskTimeoutError)
    assert quick.state is TaskState.DONE


def test_cancel_routes_to_the_owner(tmp_path: Path) -> None:
    a = ComputeTask(executable="/bin/sleep", arguments=["60"], backend="right")
    b = ComputeTask(executable="/bin/sleep", arguments=["60"])  # default: left

    async def go() -> None:
        async with Session(backends=two_backends(), work_dir=tmp_path) as session:
            await session.submit_tasks([a, b])
            await wait_for(lambda: a.state is TaskState.RUNNING and b.state is TaskState.RUNNING, "running")
            assert await session.cancel_tasks([a, b]) == [True, True]
            assert await session.cancel_tasks([ComputeTask(executable="/bin/true")]) == [False]

    run(go())
    assert a.state is TaskState.CANCELED and b.state is TaskState.CANCELED


def test_closing_leaves_no_child_process(tmp_path: Path) -> None:
    before = children_of_this_process()
    pidfiles = [tmp_path / f"grandchild{i}" for i in range(3)]
    tasks = [
        # a child that starts a grandchild of its own: both must go
        ComputeTask(executable="/bin/sh", arguments=["-c", f"sleep 60 & echo $! > {p}; wait"], backend=backend)
        for p, backend in zip(pidfiles, ["left", "right", "left"], strict=True)
    ]
    queued = ComputeTask(executable="/bin/sleep", arguments=["60"], backend="left", resources={"cores_per_rank": 2})
    func = ComputeTask(function=fn.sleep, args=(0.5,), backend="right")
    seen: dict[str, set[int]] = {}

    async def go() -> Session:
        session = Session(backends=two_backends(), work_dir=tmp_path)
        async with session:
            await session.submit_tasks([*tasks, queued, func])
            await wait_for(lambda: all(p.exists() and p.read_text().strip() for p in pidfiles), "grandchildren started")
            seen["children"] = children_of_this_process() - before
        with pytest.raises(RuntimeError, match="closed"):
            await session.submit_tasks([ComputeTask(executable="/bin/true")])
        await session.close()  # idempotent
        return session

    session = run(go())
    assert len(seen["children"]) >= 3, "the sleepers really ran as children of this process"
    grandchildren = [int(p.read_text()) for p in pidfiles]
    assert children_of_this_process() - before == set()
    assert [g for g in grandchildren if pid_alive(g)] == []
    assert all(t.state is TaskState.CANCELED for t in [*tasks, queued])
    assert func.state in (TaskState.CANCELED, TaskState.DONE)
    assert all(b.state() == "STOPPED" for b in session.backends.values())


def test_session_start_starts_every_backend(tmp_path: Path) -> None:
    engines = [AsyncioEngine(), AsyncioEngine()]
    backends = [Backend(engines[0], "x"), Backend(engines[1], "y")]

    async def go() -> None:
        session = await Session(backends=backends, work_dir=tmp_path).start()
        assert [b.state() for b in backends] == ["RUNNING", "RUNNING"]
        await session.close()

    run(go())
    assert [e.stopped for e in engines] == [1, 1]


def test_bad_input_for_one_backend_submits_nothing_anywhere(recorder: Recorder, tmp_path: Path) -> None:
    good = ComputeTask(function=fn.noop, backend="x")
    bad = {"uid": "bad-dict", "executable": "/bin/true", "timeout": -1, "backend": "y"}

    async def go() -> None:
        async with Session(backends=[Backend(AsyncioEngine(), "x"), Backend(AsyncioEngine(), "y")], work_dir=tmp_path) as session:
            with pytest.raises(rhapsody.TaskValidationError):
                await session.submit_tasks([good, bad])
            await asyncio.sleep(0.1)

    run(go())
    assert good.state is TaskState.NEW and recorder.transitions == []


def test_submit_hook_refusing_one_backend_submits_nothing_anywhere(recorder: Recorder, tmp_path: Path) -> None:
    class RefuseY:
        @hookimpl
        def rhapsody_task_submit(self, backend: Backend, tasks: list[ComputeTask]) -> None:
            if backend.name == "y":
                raise PermissionError("y is closed today")

    on_x = ComputeTask(function=fn.noop, backend="x")
    on_y = ComputeTask(function=fn.noop, backend="y")
    engines = [AsyncioEngine(), AsyncioEngine()]
    policy = RefuseY()

    async def go() -> None:
        async with Session(backends=[Backend(engines[0], "x"), Backend(engines[1], "y")], work_dir=tmp_path) as session:
            get_plugin_manager().register(policy)
            try:
                with pytest.raises(PermissionError, match="closed today"):
                    await session.submit_tasks([on_x, on_y])
            finally:
                get_plugin_manager().unregister(policy)
            await asyncio.sleep(0.1)
            assert session.backends["x"].get_task(on_x.uid) is None

    run(go())
    assert on_x.state is TaskState.NEW and on_x.future is None and on_y.state is TaskState.NEW
    assert recorder.transitions == [] and [name for name, _ in recorder.submits] == ["x"]


class StuckStop(AsyncioEngine):
    stop_timeout = 0.3

    async def stop(self) -> None:
        self.stopped += 1
        await asyncio.Event().wait()  # an engine that never lets go


def test_close_survives_a_backend_whose_stop_hangs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stuck, fine = StuckStop(), AsyncioEngine()
    session = Session(backends=[Backend(stuck, "stuck"), Backend(fine, "fine")], work_dir=tmp_path)

    async def go() -> None:
        await session.start()
        await session.close()

    caplog.set_level(logging.ERROR, logger="rhapsody")
    run(go(), deadline=30)
    assert [b.state() for b in session.backends.values()] == ["STOPPED", "STOPPED"]
    assert stuck.stopped == 1 and fine.stopped == 1
    logged = "\n".join(str(r.msg) for r in caplog.records if r.name.startswith("rhapsody"))
    assert "stuck" in logged and "did not finish within 0.3 s" in logged


def test_session_start_without_backends_adds_the_default(tmp_path: Path) -> None:
    """``await Session().start()`` brings the default backend in, as the demo relies on."""
    session = Session(work_dir=tmp_path)

    async def go() -> list[str]:
        await session.start()
        names = list(session.backends)
        await session.close()
        return names

    assert run(go()) == ["concurrent"]
