"""The pluggy hooks: their specs, and that core calls them as documented, on
real backends (the concurrent plugin and the small engines in `toys`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pluggy
import pytest
from toys import AsyncioEngine, Recorder, manual_backend, plugin_source, run, wait_for

import rhapsody
from rhapsody import Backend, ComputeTask, TaskState, hookimpl, hookspecs
from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.registry import discover_backends, get_plugin_manager, get_registry
from rhapsody.testing import tasks as fn

SPECS = {
    "rhapsody_register_backends": [],
    "rhapsody_task_submit": ["backend", "tasks"],
    "rhapsody_task_cancel": ["backend", "task", "reason"],
    "rhapsody_task_state_changed": ["backend", "task", "old_state", "new_state"],
}


def test_hookimpl_is_exported_marker() -> None:
    assert rhapsody.hookimpl is hookspecs.hookimpl
    assert isinstance(hookimpl, pluggy.HookimplMarker) and hookimpl.project_name == "rhapsody"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hookspec_signature(name: str) -> None:
    caller = getattr(get_plugin_manager().hook, name)
    assert list(caller.spec.argnames) == SPECS[name]
    assert caller.spec.opts.get("firstresult", False) is False, "every implementation is called"


# ------------------------------------------------------------------ state hook
def test_observer_sees_every_transition(recorder: Recorder, tmp_path: Path) -> None:
    ok = ComputeTask(executable="/bin/echo", arguments=["hi"])
    bad = ComputeTask(executable="/bin/sh", arguments=["-c", "exit 4"])
    func = ComputeTask(function=fn.add, args=(1, 2))
    huge = ComputeTask(function=fn.noop, resources={"cores_per_rank": 64})
    slow = ComputeTask(executable="/bin/sleep", arguments=["60"])

    async def go() -> None:
        async with ConcurrentExecutionBackend(name="obs", cores=4) as backend:
            await backend.submit_tasks([ok, bad, func, huge, slow])
            await wait_for(lambda: slow.state is TaskState.RUNNING, "slow task running")
            await backend.cancel_tasks([slow])
            await asyncio.gather(*(t.future for t in (ok, bad, func, huge, slow)), return_exceptions=True)  # type: ignore[misc]

    run(go())
    assert recorder.states_of(ok.uid) == ["SUBMITTED", "RUNNING", "DONE"]
    assert recorder.states_of(bad.uid) == ["SUBMITTED", "RUNNING", "FAILED"]
    assert recorder.states_of(func.uid) == ["SUBMITTED", "RUNNING", "DONE"]
    assert recorder.states_of(huge.uid) == ["FAILED"], "rejected at once for resources"
    assert recorder.states_of(slow.uid) == ["SUBMITTED", "RUNNING", "CANCELED"]
    assert {b for _, b, _, _ in recorder.transitions} == {"obs"}
    for uid in (ok.uid, bad.uid, func.uid, slow.uid):
        olds = [old.value for u, _, old, _ in recorder.transitions if u == uid]
        assert olds == ["NEW", "SUBMITTED", "RUNNING"]


class Broken:
    """An observer with a bug (also raises on the cancel hook)."""

    @hookimpl
    def rhapsody_task_state_changed(self, task: Any) -> None:
        raise RuntimeError("observer bug")

    @hookimpl
    def rhapsody_task_cancel(self, task: Any) -> None:
        raise RuntimeError("cancel observer bug")


class OldStyleWrapper:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(hookwrapper=True)
    def rhapsody_task_state_changed(self, new_state: TaskState) -> Any:
        result = yield
        result.get_result()  # a well-behaved old-style wrapper looks at the outcome
        self.seen.append(new_state.value)


class NewStyleWrapper:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def rhapsody_task_state_changed(self, new_state: TaskState) -> Any:
        value = yield  # re-raises what the observers inside raised
        self.seen.append(new_state.value)
        return value


class Registered:
    """Plugins on the process-wide manager for one test, unregistered after."""

    def __init__(self, *plugins: object) -> None:
        self.plugins = plugins

    def __enter__(self) -> None:
        for plugin in self.plugins:
            get_plugin_manager().register(plugin)

    def __exit__(self, *exc: object) -> None:
        for plugin in self.plugins:
            get_plugin_manager().unregister(plugin)


def _run_tasks(*tasks: ComputeTask, cancel: ComputeTask | None = None) -> None:
    async def go() -> None:
        async with Backend(AsyncioEngine(), "asyncio") as backend:
            await backend.submit_tasks([*tasks, *([cancel] if cancel else [])])
            if cancel is not None:
                assert await backend.cancel_tasks([cancel]) == [True]
            await asyncio.gather(*(t.future for t in (*tasks, *([cancel] if cancel else []))), return_exceptions=True)  # type: ignore[misc]

    run(go(), deadline=30)


def _errors(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(str(r.msg) for r in caplog.records if r.name.startswith("rhapsody") and r.levelno >= logging.ERROR)


@pytest.mark.parametrize("wrapper", [None, OldStyleWrapper, NewStyleWrapper], ids=["alone", "hookwrapper", "wrapper"])
def test_raising_observer_stops_neither_task_nor_other_observers(
    recorder: Recorder, wrapper: type | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Also with a wrapper around the observers: before the redesign an
    observer's exception went through a new-style wrapper and ``await task``
    never returned."""
    caplog.set_level(logging.ERROR, logger="rhapsody")
    wrap = wrapper() if wrapper else None
    t = ComputeTask(function=fn.add, args=(2, 2))
    stopped = ComputeTask(function=fn.async_sleep, args=(60,))
    with Registered(*([wrap] if wrap else []), Broken()):  # registered after `recorder`: pluggy calls them first
        _run_tasks(t, cancel=stopped)
    assert t.state is TaskState.DONE and t.return_value == 4
    assert stopped.state is TaskState.CANCELED
    assert recorder.states_of(t.uid) == ["SUBMITTED", "RUNNING", "DONE"]
    assert recorder.cancels == [(stopped.uid, "asyncio", "user")]
    if wrap is not None:
        assert wrap.seen.count("DONE") == 1 and wrap.seen.count("CANCELED") == 1
    logged = _errors(caplog)
    assert "observer bug" in logged and "cancel observer bug" in logged, "a raising observer is logged"


class RaisingOldWrapperBefore:
    @hookimpl(hookwrapper=True)
    def rhapsody_task_state_changed(self) -> Any:
        raise RuntimeError("wrapper bug")
        yield  # pragma: no cover - a generator that raises before its yield


class RaisingOldWrapperAfter:
    @hookimpl(hookwrapper=True)
    def rhapsody_task_state_changed(self) -> Any:
        yield
        raise RuntimeError("wrapper bug")


class RaisingNewWrapperBefore:
    @hookimpl(wrapper=True)
    def rhapsody_task_state_changed(self) -> Any:
        raise RuntimeError("wrapper bug")
        yield  # pragma: no cover


class RaisingNewWrapperAfter:
    @hookimpl(wrapper=True)
    def rhapsody_task_state_changed(self) -> Any:
        yield
        raise RuntimeError("wrapper bug")


@pytest.mark.filterwarnings("ignore::pluggy.PluggyTeardownRaisedWarning")  # pluggy's own note on RaisingOldWrapperAfter
@pytest.mark.parametrize("wrapper", [RaisingOldWrapperBefore, RaisingOldWrapperAfter, RaisingNewWrapperBefore, RaisingNewWrapperAfter])
def test_raising_wrapper_does_not_hang_the_task(wrapper: type, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="rhapsody")
    ok = ComputeTask(function=fn.add, args=(1, 1))
    bad = ComputeTask(function=fn.boom)
    exe = ComputeTask(executable="/bin/echo", arguments=["hi"])
    with Registered(wrapper()):
        _run_tasks(ok, bad, exe)
    assert ok.state is TaskState.DONE and ok.return_value == 2
    assert bad.state is TaskState.FAILED and isinstance(bad.exception, fn.TaskBoom)
    assert exe.state is TaskState.DONE and exe.stdout == "hi\n"
    assert "wrapper bug" in _errors(caplog)


# ------------------------------------------------------------------ hook names are checked
def test_misspelt_hook_implementation_is_refused() -> None:
    class Misspelt:
        @hookimpl
        def rhapsody_task_stat_changed(self, task: Any) -> None:
            """(meant: rhapsody_task_state_changed)"""

    pm = get_plugin_manager()
    plugin = Misspelt()
    with pytest.raises(pluggy.PluginValidationError, match="rhapsody_task_stat_changed"):
        pm.register(plugin)
    assert not pm.is_registered(plugin), "a refused plugin is not left half registered"
    recorder = Recorder()
    with Registered(recorder):  # the manager still takes good plugins afterwards
        t = ComputeTask(function=fn.noop)
        _run_tasks(t)
    assert recorder.states_of(t.uid) == ["SUBMITTED", "RUNNING", "DONE"]


def test_entry_point_plugin_with_a_misspelt_hook_is_broken(site) -> None:  # type: ignore[no-untyped-def]
    good = site.module("good")
    site.add("rhapsody-good", {"good": good}, {good: plugin_source(good, ("good", "somewhere:Good"))})
    typo = site.module("typo")
    site.add(
        "rhapsody-typo",
        {"typo": typo},
        {typo: "from rhapsody import hookimpl\n\n@hookimpl\ndef rhapsody_register_backend():\n    return []\n"},
    )
    site.activate()
    assert "good" in discover_backends() and "typo" not in discover_backends()
    (broken,) = [b for b in get_registry().broken if b.distribution == "rhapsody-typo"]
    assert broken.entry_point == "typo" and "rhapsody_register_backend" in broken.reason
    assert "PluginValidationError" in broken.reason


# ------------------------------------------------------------------ submit hook
def test_submit_hook_that_raises_refuses_the_batch(recorder: Recorder) -> None:
    class Policy:
        @hookimpl
        def rhapsody_task_submit(self, backend: Any, tasks: Any) -> None:
            if any(t.metadata.get("forbidden") for t in tasks):
                raise PermissionError("policy refuses this batch")

    pm = get_plugin_manager()
    policy = Policy()
    pm.register(policy)
    a = ComputeTask(executable="/bin/echo", arguments=["a"])
    b = ComputeTask(executable="/bin/echo", arguments=["b"], metadata={"forbidden": True})

    async def go() -> None:
        async with ConcurrentExecutionBackend(name="policed", cores=2) as backend:
            try:
                with pytest.raises(PermissionError, match="refuses"):
                    await backend.submit_tasks([a, b])
            finally:
                pm.unregister(policy)
            for t in (a, b):
                assert backend.get_task(t.uid) is None
                assert t.state is TaskState.NEW and t.future is None and t.stdout is None
            assert recorder.transitions == []
            # nothing was handed over, so the same tasks can still be submitted
            await backend.submit_tasks([a, b])
            await asyncio.gather(a.future, b.future, return_exceptions=True)  # type: ignore[arg-type]

    run(go())
    assert a.stdout.strip() == "a" and b.stdout.strip() == "b"
    assert [names for _, names in recorder.submits] == [[a.uid, b.uid]]


# ------------------------------------------------------------------ cancel hook
def test_cancel_hook_reasons(recorder: Recorder) -> None:
    user = ComputeTask(executable="/bin/sleep", arguments=["60"])
    timed = ComputeTask(executable="/bin/sleep", arguments=["60"], timeout=0.3)
    left = ComputeTask(executable="/bin/sleep", arguments=["60"])

    async def go() -> None:
        backend = ConcurrentExecutionBackend(name="cx", cores=3)
        async with backend:
            await backend.submit_tasks([user, timed, left])
            await wait_for(lambda: all(t.state is TaskState.RUNNING for t in (user, left)), "tasks running")
            assert await backend.cancel_tasks([user]) == [True]
            await asyncio.wait([timed.future], timeout=30)  # type: ignore[list-item]
        assert left.state is TaskState.CANCELED

    run(go())
    assert (user.uid, "cx", "user") in recorder.cancels
    assert (timed.uid, "cx", "timeout") in recorder.cancels
    assert (left.uid, "cx", "shutdown") in recorder.cancels
    assert len(recorder.cancels) == 3
    assert timed.state is TaskState.FAILED and isinstance(timed.exception, rhapsody.TaskTimeoutError)


def test_cancel_hook_not_called_for_ended_task(recorder: Recorder) -> None:
    async def go() -> None:
        backend, engine = manual_backend("m")
        async with backend:
            t = ComputeTask(executable="/bin/true")
            await backend.submit_tasks([t])
            engine.handles[t.uid].done(exit_code=0)
            assert await backend.cancel_task(t.uid) is False
            assert await backend.cancel_task("no-such-uid") is False
            assert engine.cancel_calls == []

    run(go())
    assert recorder.cancels == []


def test_hooks_registered_after_the_backend_was_built_are_called_and_stop_when_unregistered() -> None:
    """Core asks "is anyone listening?" once per transition without copying the
    implementation list: a plugin that comes or goes while a backend lives is
    seen at once, for the submit hook and the state hook alike."""

    class Late:
        def __init__(self) -> None:
            self.submitted: list[str] = []
            self.states: list[str] = []

        @hookimpl
        def rhapsody_task_submit(self, tasks: list[Any]) -> None:
            self.submitted += [t.uid for t in tasks]

        @hookimpl
        def rhapsody_task_state_changed(self, task: Any, new_state: TaskState) -> None:
            self.states.append(f"{task.uid}:{new_state.value}")

    late = Late()

    async def go() -> tuple[ComputeTask, ComputeTask]:
        async with Backend(AsyncioEngine(), "asyncio") as backend:
            heard = ComputeTask(function=fn.add, args=(1, 2))
            with Registered(late):
                await backend.submit_tasks([heard])
                await heard
            unheard = ComputeTask(function=fn.add, args=(1, 2))
            await backend.submit_tasks([unheard])
            await unheard
            return heard, unheard

    heard, unheard = run(go(), deadline=30)
    assert unheard.state is TaskState.DONE and late.submitted == [heard.uid]
    assert late.states == [f"{heard.uid}:SUBMITTED", f"{heard.uid}:RUNNING", f"{heard.uid}:DONE"]


def test_live_impls_asks_pluggy_each_time_when_it_keeps_no_list() -> None:
    """On a pluggy that keeps its implementations otherwise, the answer is
    still current (asked through the public ``get_hookimpls``)."""
    from rhapsody.registry.manager import live_impls

    class Caller:
        impls: list[object] = []

        def get_hookimpls(self) -> list[object]:
            return list(self.impls)

    caller = Caller()
    listening = live_impls(caller)
    assert not listening
    caller.impls = [object()]
    assert listening and len(listening) == 1
