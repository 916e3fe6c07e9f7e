"""States and the state machine every backend reports through.

The stateful test drives a real backend (around `toys.ManualEngine`, whose
engine is the test) with random sequences of engine reports through task
handles and cancels, and checks core's bookkeeping after every step."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, precondition, rule
from toys import Recorder, manual_backend

from rhapsody import BackendError, ComputeTask, TaskState, TaskValidationError
from rhapsody.errors import IllegalStateTransition, TaskExecutionError, TaskTimeoutError
from rhapsody.registry import get_plugin_manager
from rhapsody.states import StateMap, check_transition, legal_successors

N, S, R, D, F, C = (TaskState.NEW, TaskState.SUBMITTED, TaskState.RUNNING, TaskState.DONE, TaskState.FAILED, TaskState.CANCELED)
TERMINAL = {D, F, C}
# The lifecycle NEW -> SUBMITTED -> RUNNING -> DONE | FAILED | CANCELED; a task may
# also end straight from SUBMITTED (finished before anyone saw it start, or
# cancelled while queued) and fail or be cancelled before submission.
LEGAL = {(N, S), (N, F), (N, C), (S, R), (S, D), (S, F), (S, C), (R, D), (R, F), (R, C)}


def test_state_values_are_the_seed_strings() -> None:
    assert [s.value for s in TaskState] == ["NEW", "SUBMITTED", "RUNNING", "DONE", "FAILED", "CANCELED"]
    for s in TaskState:
        assert str(s) == s.value and s == s.value and TaskState(s.value) is s
        assert s.is_terminal == (s in TERMINAL)


def test_state_map_for_asyncflow() -> None:
    assert StateMap.terminal_states == {"DONE", "FAILED", "CANCELED"}
    assert (StateMap.NEW, StateMap.RUNNING, StateMap.DONE, StateMap.FAILED, StateMap.CANCELED) == (
        "NEW",
        "RUNNING",
        "DONE",
        "FAILED",
        "CANCELED",
    )


@pytest.mark.parametrize(("old", "new"), list(itertools.product(TaskState, TaskState)))
def test_transition_table(old: TaskState, new: TaskState) -> None:
    if (old, new) in LEGAL:
        check_transition("t", old, new)
        assert new in legal_successors(old)
    else:
        with pytest.raises(IllegalStateTransition) as info:
            check_transition("t-x", old, new)
        assert info.value.old is old and info.value.new is new and "t-x" in str(info.value)
        assert new not in legal_successors(old)


def test_terminal_states_are_final() -> None:
    for s in TERMINAL:
        assert legal_successors(s) == frozenset()


# ------------------------------------------------------------------ stateful
CANCEL_MODES = ("stopped", "refused", "kill_reports_failure", "finished_first", "raises")
_uids = itertools.count()


class BackendReporting(RuleBasedStateMachine):
    """Random engine reports and cancels on a real backend never make an illegal
    transition; terminal states are final; each future resolves exactly once,
    and the task-state hook sees each transition exactly once."""

    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.recorder = Recorder()
        self.pm = get_plugin_manager()
        self.pm.register(self.recorder)
        self.backend, self.engine = manual_backend("machine")
        # a direct state observer must see exactly what the hook sees, in the same order
        self.observed: list[tuple[str, str, TaskState, TaskState]] = []
        self.backend.add_state_observer(self._observe)
        self.loop.run_until_complete(self.backend.start())
        self.expected: dict[str, TaskState] = {}
        self.all: dict[str, ComputeTask] = {}
        self.resolved: dict[str, int] = {}
        self.shut = False

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.backend.shutdown())
            self.loop.close()
        finally:
            self.pm.unregister(self.recorder)

    def _observe(self, backend: Any, task: Any, old: TaskState, new: TaskState) -> None:
        assert task.state is new  # called after the task was updated, as the hook is
        self.observed.append((task.uid, backend.name, old, new))

    def _run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def _count_resolution(self, uid: str):  # type: ignore[no-untyped-def]
        def cb(_fut: asyncio.Future) -> None:
            self.resolved[uid] = self.resolved.get(uid, 0) + 1

        return cb

    # -- rules
    @precondition(lambda self: not self.shut)
    @rule(target=tasks, n=st.integers(min_value=1, max_value=3))
    def submit(self, n: int):  # type: ignore[no-untyped-def]
        batch = [ComputeTask(executable="/bin/true", uid=f"sm.{next(_uids)}") for _ in range(n)]
        self._run(self.backend.submit_tasks(batch))
        for t in batch:
            assert t.state is S
            self.expected[t.uid] = S
            self.all[t.uid] = t
            t.future.add_done_callback(self._count_resolution(t.uid))
        return multiple(*batch)

    @rule(task=tasks)
    def report_running(self, task: ComputeTask) -> None:
        self.engine.handles[task.uid].running()
        if self.expected[task.uid] is S:
            self.expected[task.uid] = R

    @rule(task=tasks, code=st.sampled_from([None, 0, 1, 127, -9]), value=st.integers())
    def report_result(self, task: ComputeTask, code: int | None, value: int) -> None:
        self.engine.handles[task.uid].done(value, exit_code=code, stdout="o", stderr="e")
        if not self.expected[task.uid].is_terminal:
            self.expected[task.uid] = D if code in (None, 0) else F
            if code not in (None, 0):
                assert isinstance(task.exception, TaskExecutionError) and task.exception.exit_code == code
            else:
                assert task.return_value == value

    @rule(task=tasks)
    def report_failure(self, task: ComputeTask) -> None:
        boom = ValueError("engine says no")
        self.engine.handles[task.uid].failed(boom)
        if not self.expected[task.uid].is_terminal:
            self.expected[task.uid] = F
            assert task.exception is boom and "engine says no" in task.stderr

    @rule(task=tasks)
    def report_canceled(self, task: ComputeTask) -> None:
        self.engine.handles[task.uid].canceled()
        if not self.expected[task.uid].is_terminal:
            self.expected[task.uid] = C

    @rule(task=tasks, mode=st.sampled_from(CANCEL_MODES))
    def cancel(self, task: ComputeTask, mode: str) -> None:
        self.engine.cancel_mode = mode
        before = self.expected[task.uid]
        stopped = self._run(self.backend.cancel_task(task.uid))
        if before.is_terminal:
            assert stopped is False
            return
        if mode in ("stopped", "kill_reports_failure"):
            assert stopped is True
            self.expected[task.uid] = C
            assert task.exception is None, "a kill we asked for is not the task's failure"
        elif mode == "finished_first":
            assert stopped is False
            self.expected[task.uid] = D
        else:  # refused or the engine's cancel raised: the task runs on
            assert stopped is False
        assert self.recorder.cancels[-1] == (task.uid, "machine", "user")

    @precondition(lambda self: not self.shut and self.all)
    @rule()
    def shutdown(self) -> None:
        self.engine.cancel_mode = "stopped"
        self._run(self.backend.shutdown())
        self.shut = True
        for uid, state in self.expected.items():
            if not state.is_terminal:
                self.expected[uid] = C
        with pytest.raises(BackendError):
            self._run(self.backend.submit_tasks([ComputeTask(executable="/bin/true")]))

    # -- invariants
    @invariant()
    def states_match_the_model(self) -> None:
        for uid, task in self.all.items():
            assert task.state is self.expected[uid], (uid, task.state, self.expected[uid])

    @invariant()
    def hook_saw_each_transition_once(self) -> None:
        by_task: dict[str, list[tuple[TaskState, TaskState]]] = {}
        for uid, backend, old, new in self.recorder.transitions:
            assert backend == "machine"
            assert (old, new) in LEGAL, (uid, old, new)
            by_task.setdefault(uid, []).append((old, new))
        for uid, task in self.all.items():
            chain = by_task[uid]
            assert chain[0][0] is N
            for (_, a), (b, _) in itertools.pairwise(chain):
                assert a is b, f"{uid}: transitions do not chain: {chain}"
            assert chain[-1][1] is task.state
            assert sum(1 for _, new in chain if new in TERMINAL) <= 1
            assert set(task.timestamps) == {"NEW", *(new.value for _, new in chain)}

    @invariant()
    def state_observer_saw_what_the_hook_saw(self) -> None:
        assert self.observed == self.recorder.transitions

    @invariant()
    def futures_resolve_once_when_terminal(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))  # let done-callbacks run
        for uid, task in self.all.items():
            assert task.future.done() == task.state.is_terminal
            assert self.resolved.get(uid, 0) == (1 if task.state.is_terminal else 0)
            assert (self.backend.get_task(uid) is None) == task.state.is_terminal
            assert self.engine.handles[uid].cancel_requested == task.state.is_terminal


BackendReporting.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestBackendReporting = BackendReporting.TestCase


def test_resubmitting_a_task_is_rejected() -> None:
    async def go() -> None:
        backend, _ = manual_backend("m")
        async with backend:
            t = ComputeTask(executable="/bin/true")
            await backend.submit_tasks([t])
            with pytest.raises(TaskValidationError, match="already submitted"):
                await backend.submit_tasks([t])
            u = ComputeTask(executable="/bin/true")
            with pytest.raises(TaskValidationError):
                await backend.submit_tasks([u, u])
            assert u.state is N
            other, other_engine = manual_backend("other")
            async with other:
                with pytest.raises(TaskValidationError, match="already submitted"):
                    await other.submit_tasks([t])
            assert other_engine.received == [] and backend.get_task(t.uid) is t

    asyncio.run(go())


def test_a_copy_of_an_ended_task_is_not_run_again() -> None:
    """A copy (or unpickled snapshot) of an ended task has no future: it is
    refused as already submitted, not handed to the engine as if new."""

    async def go() -> None:
        backend, engine = manual_backend("m")
        async with backend:
            t = ComputeTask(executable="/bin/true")
            await backend.submit_tasks([t])
            engine.handles[t.uid].done()
            await t
            snapshot = copy.copy(t)
            assert snapshot.future is None and snapshot.state is TaskState.DONE
            with pytest.raises(TaskValidationError, match="already submitted"):
                await backend.submit_tasks([snapshot])
            assert len(engine.received) == 1

    asyncio.run(go())


def test_timeout_cancel_becomes_failed_with_timeout_error() -> None:
    async def go() -> None:
        backend, engine = manual_backend("m")
        async with backend:
            t = ComputeTask(executable="/bin/true", timeout=0.05)
            await backend.submit_tasks([t])
            await asyncio.sleep(0.2)
            assert t.state is S, "the timeout clock starts at RUNNING, not at submission"
            engine.handles[t.uid].running()
            await asyncio.wait([t.future], timeout=30)  # type: ignore[list-item]
            assert t.state is F and isinstance(t.exception, TaskTimeoutError)
            assert t.exception.timeout == 0.05 and t.uid in str(t.exception)

    asyncio.run(go())
