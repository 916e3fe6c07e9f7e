"""The one place a task's state changes: transitions, timeouts, hooks, futures.

A `TaskTracker` belongs to one backend and lives on its event loop. Engine
reports arrive through `TaskHandle` from any thread; `post` runs them on the
loop, coalescing those from other threads into one wake-up.

A task's start reported from another thread does not wake the loop by itself
while reports are flowing (`post_running`): it is stamped where the engine
reported it and applied with the next report, or by a tick at most `TICK`
seconds later, so a short task costs the loop one wake-up, not two. The end of
a task whose engine is already busy with the next one (`post_soon`) waits the
same way: a stream of short tasks wakes the loop once a tick, not once a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from rhapsody.errors import TaskExecutionError, TaskTimeoutError
from rhapsody.registry.manager import get_plugin_manager, live_impls
from rhapsody.retry import NO_RETRIES, RetryPolicy
from rhapsody.states import TERMINAL_STATES, TaskState, check_transition
from rhapsody.task import BaseTask, ComputeTask, settle

if TYPE_CHECKING:
    from rhapsody.engine.handle import TaskHandle

# what a dict submitter (radical.asyncflow) reads back from its own dict
_RESULT_KEYS = ("stdout", "stderr", "exit_code", "return_value", "exception")
_AI_RESULT_KEYS = (*_RESULT_KEYS, "response", "metrics")
_TAIL = 2000
#: the longest a start reported off the loop waits to be applied (seconds)
TICK = 0.01


def _tail(task: BaseTask, stderr: str | None) -> str:
    """The last part of a failed executable's error output, for its message."""
    if not stderr:
        return ""
    if isinstance(task, ComputeTask) and task.capture_stdio:
        try:
            with open(stderr, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - _TAIL))
                stderr = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
    text = stderr.strip()
    return text if len(text) <= _TAIL else "..." + text[-_TAIL:]


class TaskTracker:
    """In-flight tasks of one backend (by uid, as their handles), cancels under
    way, timers, and the observers to tell."""

    def __init__(self, backend: Any, log: Any) -> None:
        self.backend = backend  # what hooks and callbacks receive
        self.log = log
        self.handles: dict[str, TaskHandle] = {}
        self.canceling: dict[str, str] = {}  # uid -> "user" | "timeout" | "shutdown"
        self.callbacks: list[Callable[[Any, str], Any]] = []
        self.on_timeout: Callable[[BaseTask], Any] = lambda task: None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # (fn, *args) per report: one gc-tracked object each (with 100,000 tasks in
        # flight the collector's full passes are most of what a report costs)
        self._inbox: deque[tuple[Any, ...]] = deque()
        # bound once, for the same reason: a report made off the loop holds these,
        # not a method object of its own
        self.report_running, self.report_done, self.report_failed = self.set_running, self.set_done, self.set_failed
        self._drain_armed = False
        self._ticking = False  # a tick is due: starts reported off the loop may wait for it
        self._drained = 0  # drains so far: a tick that saw none since the last stops ticking
        self._drained_at_tick = 0
        self._tick_timer: asyncio.TimerHandle | None = None
        self._hook = get_plugin_manager().hook.rhapsody_task_state_changed
        self._hook_impls = live_impls(self._hook)  # truthy while anyone implements the hook
        self.retry_policy: RetryPolicy = NO_RETRIES
        #: called with the new handle of a task whose retry is due (the backend resubmits it)
        self.on_retry: Callable[[TaskHandle], Any] = lambda handle: None
        self.retry_timers: dict[str, asyncio.TimerHandle] = {}
        #: called with every task that reached a terminal state (a session's journal)
        self.on_end: list[Callable[[BaseTask], Any]] = []
        #: called as the state hook is, ``(backend, task, old, new)``, without pluggy's
        #: per-call cost (telemetry: three transitions a task)
        self.observers: list[Callable[[Any, BaseTask, TaskState, TaskState], Any]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._loop_thread = loop, threading.get_ident()

    # ------------------------------------------------------------- delivery
    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop: now when called there, else soon."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
            return
        self._inbox.append((fn, *args))
        if not self._drain_armed:
            self._wake()

    def post_running(self, handle: TaskHandle, worker: str | None = None) -> None:
        """The engine started ``handle``'s task: stamped now, applied on the loop.
        Off the loop this wakes the loop only when no tick is due or the task
        has a timeout (which must start counting at once)."""
        if threading.get_ident() == self._loop_thread:
            self.set_running(handle, worker)
            return
        self._inbox.append((self.report_running, handle, worker, time.time()))
        # Appended before `_ticking` is read; `_tick` clears it before its last
        # look at the inbox: one of the two always sees this report.
        if not self._drain_armed and (handle.task.timeout or not self._ticking):
            self._wake()

    def post_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """`post` for a report the engine follows with more at once (it is already
        on its next task): off the loop it wakes the loop only when no tick is due;
        otherwise the report rides with the next one or that tick (see `post_running`)."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
            return
        self._inbox.append((fn, *args))
        if not self._drain_armed and not self._ticking:
            self._wake()

    def _wake(self) -> None:
        self._drain_armed = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # the loop is gone: nobody is left to tell
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._drain_armed = False  # first: a report appended meanwhile arms a new drain
        self._drained += 1
        inbox, running, done = self._inbox, self.report_running, self.report_done
        while inbox:
            report = inbox.popleft()
            try:
                # A short task's start and end usually arrive together: applied in one go
                if report[0] is running and inbox and inbox[0][0] is done and inbox[0][1] is report[1]:
                    self._ran(report, inbox.popleft())
                else:
                    report[0](*report[1:])
            except Exception as exc:  # noqa: BLE001 - a bug in one report must not strand the ones after it
                self.log.error(
                    "report.failed", report=getattr(report[0], "__name__", repr(report[0])), error=f"{type(exc).__name__}: {exc}"
                )
        if not self._ticking and self._loop is not None:
            self._ticking = True
            self._tick_timer = self._loop.call_later(TICK, self._tick)

    def flush(self) -> None:
        """On the loop: apply every report made so far (before a cancel decides)."""
        if self._inbox:
            self._drain()

    def _tick(self) -> None:
        if self._drained == self._drained_at_tick:  # quiet since the last tick
            self._ticking = False  # from now on a start reported off the loop wakes it
            if self._inbox:  # appended before that report could see it
                self._drain()  # (which ticks again)
            return
        assert self._loop is not None
        self._tick_timer = self._loop.call_later(TICK, self._tick)
        if self._inbox:
            self._drain()
        self._drained_at_tick = self._drained

    def stop_wanted(self, task: BaseTask) -> bool:
        return task.state in TERMINAL_STATES or task.uid in self.canceling

    # ------------------------------------------------------------- reports
    # Each takes the reporting handle: a report from an attempt that was
    # retried (its handle replaced) or that already ended is dropped.
    def _current(self, handle: TaskHandle) -> bool:
        return self.handles.get(handle.task.uid) is handle

    def set_running(self, handle: TaskHandle, worker: str | None = None, at: float | None = None) -> None:
        task = handle.task
        if task.state is TaskState.SUBMITTED and self._current(handle):
            task.worker = worker
            self._enter(task, TaskState.SUBMITTED, TaskState.RUNNING, at)

    def _ran(self, running: tuple[Any, ...], done: tuple[Any, ...]) -> None:
        """`set_running` then `set_done` of one handle, as one report: the checks
        both would make, made once."""
        _, handle, worker, started = running
        value, exit_code, stdout, stderr = done[2:6]
        ended = done[6] if len(done) > 6 else None  # (`TaskHandle.done` leaves the time to the loop)
        task = handle.task
        if (
            task.state is not TaskState.SUBMITTED
            or self.canceling
            or (exit_code is not None and exit_code != 0)
            or not self._current(handle)
        ):
            self.set_running(handle, worker, started)
            self.set_done(handle, value, exit_code, stdout, stderr, ended)
            return
        task.worker = worker
        self._enter(task, TaskState.SUBMITTED, TaskState.RUNNING, started)
        # an observer of RUNNING may have acted (ended, canceled, resubmitted it): then the checked
        # path decides (`cast`: the state is read again, not the SUBMITTED mypy narrowed it to above)
        if cast(TaskState, task.state) is not TaskState.RUNNING or self.canceling or not self._current(handle):
            self.set_done(handle, value, exit_code, stdout, stderr, ended)
            return
        task.return_value, task.exit_code, task.stdout, task.stderr = value, exit_code, stdout, stderr
        self._enter(task, TaskState.RUNNING, TaskState.DONE, ended)

    def submitted(self, task: BaseTask) -> None:
        """A NEW task was handed to this backend (`set_state` to SUBMITTED, without its
        checks for an ending: the hand-over path, once a task)."""
        if task.state is not TaskState.NEW:  # (NEW -> SUBMITTED is legal: `prepare` made sure of NEW)
            check_transition(task.uid, task.state, TaskState.SUBMITTED)
        self._enter(task, task.state, TaskState.SUBMITTED, None)

    def set_done(
        self, handle: TaskHandle, value: Any, exit_code: int | None, stdout: str | None, stderr: str | None, at: float | None = None
    ) -> None:
        if not self._current(handle):
            return
        task = handle.task
        if exit_code is None or exit_code == 0:
            if self.canceling:  # a cancel under way decides with the fields: the general path
                self.set_state(task, TaskState.DONE, at=at, return_value=value, exit_code=exit_code, stdout=stdout, stderr=stderr)
                return
            old = task.state  # not ended: its handle is current
            check_transition(task.uid, old, TaskState.DONE)
            task.return_value, task.exit_code, task.stdout, task.stderr = value, exit_code, stdout, stderr
            self._enter(task, old, TaskState.DONE, at)
            return
        what = task.executable if isinstance(task, ComputeTask) and task.executable else "task"
        tail = _tail(task, stderr)
        message = f"task {task.uid}: {what} exited with code {exit_code}" + (f"; stderr: {tail}" if tail else "")
        error = TaskExecutionError(task.uid, message, exit_code, stderr)
        self.set_state(
            task, TaskState.FAILED, at=at, exception=error, return_value=value, exit_code=exit_code, stdout=stdout, stderr=stderr
        )

    def set_failed(
        self,
        handle: TaskHandle,
        exc: BaseException,
        exit_code: int | None,
        stdout: str | None,
        stderr: str | None,
        tb: str | None,
        at: float | None = None,
    ) -> None:
        if not self._current(handle):
            return
        task = handle.task
        if stderr is None:
            stderr = tb if tb is not None else "".join(traceback.format_exception(exc))
        self.set_state(task, TaskState.FAILED, at=at, exception=exc, exit_code=exit_code, stdout=stdout, stderr=stderr)

    def set_answered(self, handle: TaskHandle, response: Any, metrics: dict[str, Any] | None) -> None:
        if self._current(handle):
            self.set_state(handle.task, TaskState.DONE, response=response, metrics=metrics)

    def set_canceled(self, handle: TaskHandle) -> None:
        if self._current(handle):
            self.set_state(handle.task, TaskState.CANCELED)

    # ------------------------------------------------------------- the state machine
    def set_state(self, task: BaseTask, new: TaskState, at: float | None = None, **fields: Any) -> bool:
        """Move ``task`` to ``new``, tell every observer, wake its awaiters.
        ``at``: when it happened (default: now). Reports for a task that already
        ended are dropped (engines race with cancellation); any other illegal
        move raises: it is a bug."""
        old = task.state
        if old in TERMINAL_STATES:
            return False
        terminal = new in TERMINAL_STATES
        if terminal:
            if self.canceling:
                new = self._settle(task, new, fields)
            if new is TaskState.FAILED and (task.retries or self.retry_policy.retries) and self._retry(task, old, fields):
                return True
        check_transition(task.uid, old, new)
        for key, value in fields.items():
            setattr(task, key, value)
        self._enter(task, old, new, at)
        return True

    def _enter(self, task: BaseTask, old: TaskState, new: TaskState, at: float | None) -> None:
        """The move itself, checked and with its fields set: stamp it, tell every
        observer, settle the future of a task that ended."""
        task.state = new
        task.timestamps[new._value_] = at if at is not None else time.time()  # _value_: Enum's plain attribute; .value is a slow property
        terminal = new in TERMINAL_STATES
        if terminal:
            self._ended(task)
        elif new is TaskState.RUNNING and task.timeout:
            assert self._loop is not None
            self._timers[task.uid] = self._loop.call_later(task.timeout, self._timed_out, task)
        if self.observers:
            self._observe(task, old, new)
        if self._hook_impls:  # nobody listening: no hook call on the hot path
            self._notify(task, old, new)
        origin = task._origin
        if origin is not None:  # a dict submitter reads results from its dict
            for key in _AI_RESULT_KEYS if task.kind == "ai" else _RESULT_KEYS:
                origin[key] = getattr(task, key)
            origin["state"] = new._value_
        if self.callbacks:
            self._call_back(origin if origin is not None else task, new)
        future = cast("asyncio.Future[BaseTask] | None", task._future)  # (a terminal state is entered once: no loop here yet)
        if terminal and future is not None:
            if not future.done():
                settle(future, task)
            if self._loop is not None:  # let it go: see BaseTask.future
                task._future = self._loop

    def _ended(self, task: BaseTask) -> None:
        self.handles.pop(task.uid, None)
        if self._timers:
            timer = self._timers.pop(task.uid, None)
            if timer is not None:
                timer.cancel()
        for record in self.on_end:
            try:
                record(task)
            except Exception as exc:  # noqa: BLE001 - a listener must never keep a task's awaiters waiting
                self.log.error("end_listener.failed", task=task.uid, error=f"{type(exc).__name__}: {exc}")

    def _settle(self, task: BaseTask, new: TaskState, fields: dict[str, Any]) -> TaskState:
        """While a cancel is under way, a failure is the kill we asked for, not
        the task's own: it ends CANCELED, or FAILED by timeout. DONE stays DONE."""
        reason = self.canceling.pop(task.uid, None)
        if reason is None or new is TaskState.DONE:
            return new
        if reason == "timeout":
            fields["exception"] = TaskTimeoutError(task.uid, task.timeout or 0.0)
            return TaskState.FAILED
        fields.pop("exception", None)
        return TaskState.CANCELED

    def _retry(self, task: BaseTask, old: TaskState, fields: dict[str, Any]) -> bool:
        """Instead of FAILED: note the attempt's error, go back to SUBMITTED,
        and hand the task to the engine again after the backoff. The task's
        future stays pending: it settles once, with the last attempt."""
        error = fields.get("exception")
        if not self.retry_policy.allows(task, error):
            return False
        from rhapsody.engine.handle import TaskHandle  # noqa: PLC0415 - the handle module needs this one

        old_handle = self.handles.get(task.uid)
        handle = TaskHandle(task, old_handle.launch if old_handle is not None else None, self)
        self.handles[task.uid] = handle  # from now on the failed attempt's reports are dropped
        timer = self._timers.pop(task.uid, None)
        if timer is not None:
            timer.cancel()
        task.attempt_errors.append(error if error is not None else RuntimeError("failed without an exception"))
        delay = self.retry_policy.delay(len(task.attempt_errors))
        task.attempt += 1
        task.state = TaskState.SUBMITTED
        task.timestamps.pop(TaskState.RUNNING._value_, None)
        task.worker = None  # the next attempt may run elsewhere
        task.timestamps[TaskState.SUBMITTED._value_] = time.time()
        self.log.warning("task.retry", task=task.uid, attempt=task.attempt, error=f"{type(error).__name__}: {error}", delay=round(delay, 3))
        if self.observers:
            self._observe(task, old, TaskState.SUBMITTED)
        if self._hook_impls:
            self._notify(task, old, TaskState.SUBMITTED)
        if task._origin is not None:
            task._origin["state"] = TaskState.SUBMITTED._value_
        if self.callbacks:
            self._call_back(task._origin if task._origin is not None else task, TaskState.SUBMITTED)
        assert self._loop is not None
        self.retry_timers[task.uid] = self._loop.call_later(delay, self._retry_due, handle)
        return True

    def _retry_due(self, handle: TaskHandle) -> None:
        # the timer entry stays until the resubmission really starts (`take_retry`):
        # a cancel arriving in between still finds the task waiting, not with the engine
        if self._current(handle) and not handle.task.state.is_terminal:
            self.on_retry(handle)
        else:
            self.retry_timers.pop(handle.task.uid, None)

    def take_retry(self, handle: TaskHandle) -> bool:
        """The resubmission of ``handle`` starts: False if a cancel took it first."""
        return self.retry_timers.pop(handle.task.uid, None) is not None and self._current(handle)

    def cancel_retry(self, task: BaseTask) -> bool:
        """Stop a retry that waits for its backoff: True if there was one."""
        timer = self.retry_timers.pop(task.uid, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def _notify(self, task: BaseTask, old: TaskState, new: TaskState) -> None:
        # Observers are guarded one by one at registration; this catches a
        # wrapper that raises, so the task still ends and its awaiters wake.
        try:
            self._hook(backend=self.backend, task=task, old_state=old, new_state=new)
        except Exception as exc:  # noqa: BLE001 - an observer must never break a task
            self.log.error("observer.failed", task=task.uid, error=f"{type(exc).__name__}: {exc}")

    def _observe(self, task: BaseTask, old: TaskState, new: TaskState) -> None:
        for observer in self.observers:
            try:
                observer(self.backend, task, old, new)
            except Exception as exc:  # noqa: BLE001 - an observer must never break a task
                self.log.error("observer.failed", task=task.uid, error=f"{type(exc).__name__}: {exc}")

    def _call_back(self, subject: Any, new: TaskState) -> None:
        for callback in self.callbacks:
            try:
                callback(subject, new._value_)
            except Exception as exc:  # noqa: BLE001
                self.log.error("callback.failed", task=getattr(subject, "uid", None), error=f"{type(exc).__name__}: {exc}")

    def _timed_out(self, task: BaseTask) -> None:
        self._timers.pop(task.uid, None)
        if not task.state.is_terminal:
            self.log.info("task.timeout", task=task.uid, timeout=task.timeout)
            self.on_timeout(task)

    def clear_timers(self) -> None:
        self.flush()
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._ticking = False
        for timer in [*self._timers.values(), *self.retry_timers.values()]:
            timer.cancel()
        self._timers.clear()
        self.retry_timers.clear()
