"""The class every backend derives from.

Core owns everything that is the same on every engine: the state machine,
futures, timeouts, resource checks, cancellation bookkeeping, the hooks, and the
radical.asyncflow backend protocol. A plugin only translates, by overriding:

- ``_start()``      connect to or start the engine (awaited once, by ``await backend``)
- ``_submit(tasks)`` hand tasks (already SUBMITTED) to the engine
- ``_cancel(task)``  ask the engine to stop one task; True if it will not run on
- ``_stop()``       release the engine (tasks in flight were cancelled just before)
- ``capacity()``    the largest single request the engine can ever satisfy

and reporting what the engine says with ``report_running``, ``report_result``,
``report_failure`` and ``report_canceled``, which are safe to call from any
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rhapsody.errors import (
    BackendError,
    ResourceError,
    TaskExecutionError,
    TaskTimeoutError,
    TaskValidationError,
)
from rhapsody.log import get_logger
from rhapsody.plugins.manager import get_plugin_manager
from rhapsody.resources import Resources
from rhapsody.serialize import task_from_dict
from rhapsody.states import StateMap, TaskState, check_transition
from rhapsody.task import BaseTask, ComputeTask

_RESULT_KEYS = ("state", "stdout", "stderr", "exit_code", "return_value", "exception")


class BackendState(str, enum.Enum):
    NEW = "NEW"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


def _stderr_tail(text: str | None, limit: int = 2000) -> str:
    if not text:
        return ""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class BaseExecutionBackend:
    """Awaitable, async-context-managed base of every RHAPSODY backend."""

    #: task kinds (``ComputeTask.kind``, ``AITask.kind``) this backend runs
    task_kinds: ClassVar[frozenset[str]] = frozenset({"compute"})
    # radical.asyncflow asks these before calling its data-linking hooks
    supports_implicit_data_linking: ClassVar[bool] = False
    supports_explicit_data_linking: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a backend name must be a non-empty string, got {name!r}")
        self._name = name
        self._work_dir: str = os.environ.get("RHAPSODY_WORK_DIR") or os.getcwd()
        self.is_attached = False
        self.attached_to: list[str] = []
        self._lifecycle = BackendState.NEW
        self._starting: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: dict[str, BaseTask] = {}  # not yet terminal, by uid
        self._canceling: dict[str, str] = {}  # uid -> reason, while a cancel is under way
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._callbacks: list[Callable[[Any, str], Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        hook = get_plugin_manager().hook
        self._hook_state = hook.rhapsody_task_state_changed
        self._hook_submit = hook.rhapsody_task_submit
        self._hook_cancel = hook.rhapsody_task_cancel
        self.log = get_logger("rhapsody.backend", backend=name)

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self._name

    @property
    def work_dir(self) -> Path:
        """Where this backend writes task artifacts (set by the Session)."""
        return Path(self._work_dir)

    @work_dir.setter
    def work_dir(self, value: str | os.PathLike[str]) -> None:
        self._work_dir = os.fspath(value)

    def artifact_path(self, task: BaseTask, suffix: str) -> Path:
        """``<work_dir>/<task uid>.<suffix>``, creating the directory."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir / f"{task.uid}.{suffix}"

    def state(self) -> str:
        return self._lifecycle.value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._name!r} state={self._lifecycle.value}>"

    # ------------------------------------------------------ what plugins override
    async def _start(self) -> None:
        """Start or connect to the engine. Raise to fail ``await backend``."""

    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        raise NotImplementedError

    async def _cancel(self, task: BaseTask) -> bool:
        """Stop ``task`` in the engine: True if it will not run on (or is gone)."""
        return False

    async def _stop(self) -> None:
        """Release the engine. Also called after a failed ``_start``."""

    def capacity(self) -> Resources | None:
        """The largest request one task may make here; None if unknown."""
        return None

    # ------------------------------------------------------------------ lifecycle
    def __await__(self) -> Any:
        return self.start().__await__()

    async def __aenter__(self) -> BaseExecutionBackend:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self) -> BaseExecutionBackend:
        """Start the engine once; concurrent callers share the one start."""
        if self._lifecycle is BackendState.RUNNING:
            return self
        if self._lifecycle in (BackendState.SHUTTING_DOWN, BackendState.STOPPED):
            raise BackendError(f"backend {self._name!r} was shut down; create a new one")
        if self._starting is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            self._lifecycle = BackendState.STARTING
            self._starting = self._loop.create_task(self._run_start())
        await asyncio.shield(self._starting)
        return self

    async def _run_start(self) -> None:
        t0 = time.perf_counter()
        try:
            await self._start()
        except BaseException as exc:
            self._lifecycle = BackendState.FAILED
            self.log.error("backend.start_failed", error=f"{type(exc).__name__}: {exc}")
            try:
                await self._stop()
            except Exception as stop_exc:  # noqa: BLE001 - the start error is the one to report
                self.log.warning("backend.cleanup_failed", error=str(stop_exc))
            raise
        self._lifecycle = BackendState.RUNNING
        self.log.info("backend.started", seconds=round(time.perf_counter() - t0, 3))

    async def shutdown(self) -> None:
        """Cancel every task still in flight, then release the engine. Idempotent."""
        if self._lifecycle in (BackendState.NEW, BackendState.STOPPED):
            self._lifecycle = BackendState.STOPPED
            return
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._run_shutdown())
        await asyncio.shield(self._stopping)

    async def _run_shutdown(self) -> None:
        if self._starting is not None and not self._starting.done():
            await asyncio.wait([self._starting])
        started = self._lifecycle is BackendState.RUNNING
        self._lifecycle = BackendState.SHUTTING_DOWN
        in_flight = list(self._tasks.values())
        if in_flight:
            self.log.info("backend.cancel_in_flight", tasks=len(in_flight))
            await asyncio.gather(*(self._cancel_one(t, "shutdown") for t in in_flight))
            for task in in_flight:  # the engine goes away: nothing of these will report again
                self._canceling.pop(task.uid, None)
                self._set_state(task, TaskState.CANCELED)
        try:
            if started:
                await self._stop()
        finally:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            for bg in list(self._background):
                bg.cancel()
            self._lifecycle = BackendState.STOPPED
            self.log.info("backend.stopped")

    # ----------------------------------------------------------------- submission
    async def submit_tasks(self, tasks: Iterable[BaseTask | dict[str, Any]]) -> list[BaseTask]:
        """Validate and hand ``tasks`` to the engine; returns the task objects
        (dict descriptions are turned into tasks). Bad input raises before
        anything is submitted; a task the backend can never run ends FAILED."""
        await self.start()
        return await self._hand_over(self._prepare(tasks))

    def _prepare(self, tasks: Iterable[BaseTask | dict[str, Any]]) -> list[BaseTask]:
        """Validate a batch and ask the submit hook; raises before anything is
        submitted. (The Session prepares every backend's batch before any hand-over.)"""
        if self._lifecycle is not BackendState.RUNNING:
            raise BackendError(f"backend {self._name!r} is {self._lifecycle.value}; it accepts no tasks")
        batch = [self._adopt(t) for t in tasks]
        seen: set[str] = set()
        for task in batch:
            if task.uid in seen or task.uid in self._tasks or task._future is not None:
                raise TaskValidationError(task.uid, "uid", "this task was already submitted; build a new task to run it again")
            seen.add(task.uid)
        self._hook_submit(backend=self, tasks=batch)
        return batch

    async def _hand_over(self, batch: list[BaseTask]) -> list[BaseTask]:
        """Hand a prepared batch to the engine."""
        loop = self._loop
        assert loop is not None
        capacity = self.capacity()
        accepted: list[BaseTask] = []
        for task in batch:
            task._future = loop.create_future()
            self._tasks[task.uid] = task
            problem = self._rejection(task, capacity)
            if problem is not None:
                self._set_state(task, TaskState.FAILED, exception=problem)
                continue
            self._set_state(task, TaskState.SUBMITTED)
            accepted.append(task)
        if accepted:
            try:
                await self._submit(accepted)
            except Exception as exc:  # noqa: BLE001 - the engine refused: the tasks say why
                self.log.error("backend.submit_failed", tasks=len(accepted), error=f"{type(exc).__name__}: {exc}")
                error = BackendError(f"backend {self._name!r} could not submit the task: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                for task in accepted:
                    self._set_state(task, TaskState.FAILED, exception=error)
        return batch

    def _adopt(self, task: BaseTask | dict[str, Any]) -> BaseTask:
        if isinstance(task, BaseTask):
            return task
        if isinstance(task, dict):  # radical.asyncflow and other dict-speaking callers
            adopted = task_from_dict(task)
            adopted._origin = task
            return adopted
        raise TaskValidationError(None, "<task>", f"expected a task object or a dict, got {type(task).__name__}")

    def _rejection(self, task: BaseTask, capacity: Resources | None) -> Exception | None:
        if task.kind not in self.task_kinds:
            return BackendError(f"backend {self._name!r} ({type(self).__name__}) cannot run {task.kind} tasks")
        why = task.resources.exceeds(capacity)
        if why is not None:
            return ResourceError(f"task {task.uid} can never run on backend {self._name!r}: it {why}")
        return None

    # --------------------------------------------------------------- cancellation
    async def cancel_task(self, uid: str) -> bool:
        """Cancel one task by uid: True if it was stopped, False if unknown or ended."""
        task = self._tasks.get(uid)
        if task is None:
            return False
        return await self._cancel_one(task, "user")

    async def cancel_tasks(self, tasks: Iterable[BaseTask | str]) -> list[bool]:
        uids = [t if isinstance(t, str) else t.uid for t in tasks]
        return list(await asyncio.gather(*(self.cancel_task(uid) for uid in uids)))

    async def cancel_all_tasks(self) -> int:
        return sum(await self.cancel_tasks(list(self._tasks)))

    async def _cancel_one(self, task: BaseTask, reason: str) -> bool:
        if task.state.is_terminal:
            return False
        if task.uid in self._canceling:  # a cancel is already under way
            return True
        self._canceling[task.uid] = reason
        self._hook_cancel(backend=self, task=task, reason=reason)
        try:
            stopped = await self._cancel(task)
        except Exception as exc:  # noqa: BLE001 - a cancel that blew up did not stop the task
            self.log.warning("task.cancel_failed", task=task.uid, error=f"{type(exc).__name__}: {exc}")
            stopped = False
        if task.state.is_terminal:
            return stopped and task.state is not TaskState.DONE
        if stopped:
            self._set_state(task, TaskState.CANCELED)
            return True
        self._canceling.pop(task.uid, None)
        return False

    def _on_timeout(self, task: BaseTask) -> None:
        self._timers.pop(task.uid, None)
        if not task.state.is_terminal:
            self.log.info("task.timeout", task=task.uid, timeout=task.timeout)
            self._spawn(self._cancel_one(task, "timeout"))

    def _spawn(self, coro: Any) -> None:
        bg = asyncio.ensure_future(coro)
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    # ------------------------------------------------------- reporting (any thread)
    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def report_running(self, task: BaseTask) -> None:
        """The engine started ``task``."""
        if not self._on_loop():
            self._threadsafe(self.report_running, task)
            return
        if task.state is TaskState.SUBMITTED:
            self._set_state(task, TaskState.RUNNING)

    def report_result(
        self,
        task: BaseTask,
        *,
        return_value: Any = None,
        exit_code: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> None:
        """The engine finished ``task``. An executable's non-zero ``exit_code``
        makes it FAILED with `TaskExecutionError`; anything else is DONE."""
        if not self._on_loop():
            self._threadsafe(lambda: self.report_result(task, return_value=return_value, exit_code=exit_code, stdout=stdout, stderr=stderr))
            return
        fields = {"return_value": return_value, "exit_code": exit_code, "stdout": stdout, "stderr": stderr}
        if exit_code not in (None, 0):
            what = task.executable if isinstance(task, ComputeTask) and task.executable else "task"
            tail = _stderr_tail(stderr)
            message = f"task {task.uid}: {what} exited with code {exit_code}" + (f"; stderr: {tail}" if tail else "")
            self._set_state(task, TaskState.FAILED, exception=TaskExecutionError(task.uid, message, exit_code, stderr), **fields)
        else:
            self._set_state(task, TaskState.DONE, **fields)

    def report_failure(
        self,
        task: BaseTask,
        exception: BaseException,
        *,
        exit_code: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> None:
        """``task`` failed with ``exception`` (the function's own, or a
        `BackendError` for engine trouble). Without ``stderr`` the exception's
        traceback text is stored there."""
        if not self._on_loop():
            self._threadsafe(lambda: self.report_failure(task, exception, exit_code=exit_code, stdout=stdout, stderr=stderr))
            return
        if stderr is None:
            stderr = "".join(traceback.format_exception(exception))
        self._set_state(task, TaskState.FAILED, exception=exception, exit_code=exit_code, stdout=stdout, stderr=stderr)

    def report_canceled(self, task: BaseTask) -> None:
        """The engine says ``task`` was cancelled."""
        if not self._on_loop():
            self._threadsafe(self.report_canceled, task)
            return
        self._set_state(task, TaskState.CANCELED)

    def _threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # the session is gone; nobody is left to tell
        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(fn, *args)

    # ----------------------------------------------------------- the state machine
    def _set_state(self, task: BaseTask, new: TaskState, **fields: Any) -> bool:
        """Move ``task`` to ``new``, tell every observer, wake its awaiters.
        Events for a task that already ended are dropped (engines race with
        cancellation); any other illegal move raises: it is a bug."""
        old = task.state
        if old.is_terminal:
            return False
        if new.is_terminal:
            reason = self._canceling.pop(task.uid, None)
            # While a cancel is under way, a failure is the kill we asked for, not
            # the task's own: it ends CANCELED, or FAILED by timeout. DONE stays DONE.
            if reason is not None and new is not TaskState.DONE:
                if reason == "timeout":
                    new = TaskState.FAILED
                    fields["exception"] = TaskTimeoutError(task.uid, task.timeout or 0.0)
                else:
                    new = TaskState.CANCELED
                    fields.pop("exception", None)
        check_transition(task.uid, old, new)
        for key, value in fields.items():
            setattr(task, key, value)
        task.state = new
        task.timestamps[new.value] = time.time()
        if new is TaskState.RUNNING and task.timeout:
            assert self._loop is not None
            self._timers[task.uid] = self._loop.call_later(task.timeout, self._on_timeout, task)
        elif new.is_terminal:
            self._tasks.pop(task.uid, None)
            timer = self._timers.pop(task.uid, None)
            if timer is not None:
                timer.cancel()
        observers = self._hook_state.get_hookimpls()
        if observers and any(impl.hookwrapper or impl.wrapper for impl in observers):
            self._hook_state(backend=self, task=task, old_state=old, new_state=new)  # wrappers need pluggy's own call
        elif observers:  # no observers: no call at all on the hot path
            # Each observer on its own, in pluggy's order (last registered first):
            # one that raises must not keep the others from seeing the transition.
            hook_args = {"backend": self, "task": task, "old_state": old, "new_state": new}
            for impl in reversed(observers):
                try:
                    impl.function(*[hook_args[name] for name in impl.argnames])
                except Exception as exc:  # noqa: BLE001 - an observer must never break a task
                    self.log.error("observer.failed", task=task.uid, plugin=impl.plugin_name, error=f"{type(exc).__name__}: {exc}")
        if task._origin is not None:  # a dict submitter reads results from its dict
            origin = task._origin
            for key in _RESULT_KEYS:
                origin[key] = getattr(task, key)
            origin["state"] = new.value
        if self._callbacks:
            self._notify_callbacks(task, new)
        if new.is_terminal and task._future is not None and not task._future.done():
            task._future.set_result(task)
        return True

    def _notify_callbacks(self, task: BaseTask, new: TaskState) -> None:
        subject: Any = task if task._origin is None else task._origin
        for callback in self._callbacks:
            try:
                callback(subject, new.value)
            except Exception as exc:  # noqa: BLE001
                self.log.error("callback.failed", task=task.uid, error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------ the radical.asyncflow backend protocol
    def register_callback(self, func: Callable[[Any, str], Any]) -> None:
        """Call ``func(task, state)`` on every transition (``task`` is the dict a
        caller submitted, or the task object)."""
        if func not in self._callbacks:
            self._callbacks.append(func)

    def get_task_states_map(self) -> StateMap:
        return StateMap()

    def task_state_cb(self, task: Any, state: str) -> None:
        """Kept for the seed protocol; transitions flow through the hook instead."""

    def build_task(self, *args: Any, **kwargs: Any) -> None:
        """Kept for the seed protocol: tasks are built on submission."""

    def link_implicit_data_deps(self, src_task: Any, dst_task: Any) -> None:
        """No data staging: this backend shares the submitter's filesystem."""

    def link_explicit_data_deps(self, src_task: Any = None, dst_task: Any = None, file_name: Any = None, file_path: Any = None) -> None:
        """No data staging: this backend shares the submitter's filesystem."""
