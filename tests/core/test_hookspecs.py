"""The pluggy hooks: their specs, and that core calls them as documented, on
real backends (the concurrent plugin and the small backends in `toys`)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pluggy
import pytest
from toys import AsyncioBackend, ManualBackend, Recorder, run, wait_for

import rhapsody
from rhapsody import ComputeTask, TaskState, hookimpl, hookspecs
from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.plugins import get_plugin_manager
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
def test_hookspec_signature_and_doc(name: str) -> None:
    caller = getattr(get_plugin_manager().hook, name)
    assert list(caller.spec.argnames) == SPECS[name]
    assert caller.spec.opts.get("firstresult", False) is False
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert "called" in doc.lower() and len(doc) > 150, f"{name} must say when it is called, its arguments and its return"


@pytest.mark.parametrize(
    "name",
    [
        "rhapsody_register_backends",
        "rhapsody_task_submit",
        "rhapsody_task_cancel",
        "rhapsody_task_state_changed",
    ],
)
def test_hookspec_doc_says_firstresult(name: str) -> None:
    assert "firstresult" in (inspect.getdoc(getattr(hookspecs, name)) or "")


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
            await asyncio.gather(*(t._future for t in (ok, bad, func, huge, slow)))

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


def test_raising_observer_does_not_break_tasks(recorder: Recorder) -> None:
    class Broken:
        @hookimpl
        def rhapsody_task_state_changed(self, task: Any) -> None:
            raise RuntimeError("observer bug")

    pm = get_plugin_manager()
    broken = Broken()
    pm.register(broken)
    try:
        t = ComputeTask(function=fn.add, args=(2, 2))

        async def go() -> Any:
            async with AsyncioBackend() as backend:
                await backend.submit_tasks([t])
                return await t

        assert run(go()) is t and t.return_value == 4
    finally:
        pm.unregister(broken)


def test_raising_observer_does_not_stop_other_observers(recorder: Recorder) -> None:
    class Broken:
        @hookimpl
        def rhapsody_task_state_changed(self, task: Any) -> None:
            raise RuntimeError("observer bug")

    pm = get_plugin_manager()
    broken = Broken()
    pm.register(broken)  # registered after `recorder`: pluggy calls it first
    try:
        t = ComputeTask(function=fn.noop)

        async def go() -> None:
            async with AsyncioBackend() as backend:
                await backend.submit_tasks([t])
                await t

        run(go())
    finally:
        pm.unregister(broken)
    assert recorder.states_of(t.uid) == ["SUBMITTED", "RUNNING", "DONE"]


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
            assert backend._tasks == {}
            for t in (a, b):
                assert t.state is TaskState.NEW and t._future is None and t.stdout is None
            assert recorder.transitions == []
            # nothing was handed over, so the same tasks can still be submitted
            await backend.submit_tasks([a, b])
            await asyncio.gather(a._future, b._future)

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
            await asyncio.wait_for(asyncio.shield(timed._future), 30)
        assert left.state is TaskState.CANCELED

    run(go())
    assert (user.uid, "cx", "user") in recorder.cancels
    assert (timed.uid, "cx", "timeout") in recorder.cancels
    assert (left.uid, "cx", "shutdown") in recorder.cancels
    assert len(recorder.cancels) == 3
    assert timed.state is TaskState.FAILED and isinstance(timed.exception, rhapsody.TaskTimeoutError)


def test_cancel_hook_not_called_for_ended_task(recorder: Recorder) -> None:
    async def go() -> None:
        async with ManualBackend("m") as backend:
            t = ComputeTask(executable="/bin/true")
            await backend.submit_tasks([t])
            backend.report_result(t, exit_code=0)
            assert await backend.cancel_task(t.uid) is False
            assert await backend.cancel_task("no-such-uid") is False
            assert backend.cancel_calls == []

    run(go())
    assert recorder.cancels == []
