"""`Backend`: the object users hold, around the engine a plugin supplies.

Core owns the lifecycle (start once, stop once, each with a deadline), the
tasks in flight, cancellation, timeouts and the radical.asyncflow backend
protocol; the engine (`rhapsody.engine.Engine`) only drives its engine. A
plugin's public class (``DaskExecutionBackend``, ...) is a `Backend` whose
``__init__`` builds its engine; it adds no behaviour of its own.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rhapsody.engine.contract import Engine, EngineContext, engine_label
from rhapsody.engine.handle import TaskHandle
from rhapsody.errors import BackendError, TaskValidationError
from rhapsody.execution import admission
from rhapsody.execution.tracker import TaskTracker
from rhapsody.log import get_logger
from rhapsody.registry.manager import get_plugin_manager, live_impls
from rhapsody.resources import Capacity, NodeSample
from rhapsody.retry import RetryPolicy
from rhapsody.serialize import task_from_dict
from rhapsody.states import StateMap, TaskState
from rhapsody.task import BaseTask, ComputeTask

DEFAULT_START_TIMEOUT = 300.0
DEFAULT_STOP_TIMEOUT = 120.0


class BackendState(str, enum.Enum):
    NEW = "NEW"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class Backend:
    """Awaitable, async-context-managed backend: ``await Backend(engine, name)``.

    ``start_timeout`` / ``stop_timeout``: seconds starting / stopping the engine
    may take (default: the engine's own ``start_timeout`` / ``stop_timeout``,
    else 300 / 120) before they fail with a `BackendError` naming the engine,
    the step and the time waited.
    """

    # radical.asyncflow asks these before calling its data-linking hooks
    supports_implicit_data_linking = False
    supports_explicit_data_linking = False

    def __init__(self, engine: Engine, name: str, *, start_timeout: float | None = None, stop_timeout: float | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a backend name must be a non-empty string, got {name!r}")
        self.engine = engine
        self._name = name
        self._label = engine_label(engine)
        self._kinds: frozenset[str] = getattr(engine, "task_kinds", frozenset({"compute"}))
        self._accepted: frozenset[str] = getattr(engine, "accepted_keys", frozenset())
        self._coming: Callable[[int], None] | None = getattr(engine, "tasks_coming", None)
        self._start_timeout = start_timeout or getattr(engine, "start_timeout", None) or DEFAULT_START_TIMEOUT
        self._stop_timeout = stop_timeout or getattr(engine, "stop_timeout", None) or DEFAULT_STOP_TIMEOUT
        # a str: radical.asyncflow's WorkflowEngine sets ``backend._work_dir`` itself
        self._work_dir: str | os.PathLike[str] = os.environ.get("RHAPSODY_WORK_DIR") or os.getcwd()
        self._lifecycle = BackendState.NEW
        self._starting: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it started on: its tasks' futures belong to it
        self.is_attached = False
        self.attached_to: list[str] = []
        self.log = get_logger("rhapsody.backend", backend=name)
        self._tracker = TaskTracker(self, self.log)
        self._tracker.on_timeout = lambda task: self._spawn(self._cancel_one(task, "timeout"))
        self._tracker.on_retry = lambda handle: self._spawn(self._resubmit(handle))
        self._hook = get_plugin_manager().hook
        self._submit_impls = live_impls(self._hook.rhapsody_task_submit)

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self._name

    @property
    def work_dir(self) -> Path:
        """Where this backend's task artifacts go (a Session sets it to its own)."""
        return Path(self._work_dir)

    @work_dir.setter
    def work_dir(self, value: str | os.PathLike[str]) -> None:
        self._work_dir = value

    def state(self) -> str:
        return self._lifecycle.value

    @property
    def accepting(self) -> bool:
        """Started and not shutting down: it accepts tasks."""
        return self._lifecycle is BackendState.RUNNING

    def capacity(self) -> Capacity | None:
        """The most one task may ask of this backend (None: unknown)."""
        return self.engine.capacity()

    @property
    def retry_policy(self) -> RetryPolicy:
        """Retries of tasks that do not set their own ``retries`` (default: none);
        a Session sets its own on the backends it holds."""
        return self._tracker.retry_policy

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy) -> None:
        if not isinstance(policy, RetryPolicy):
            raise TypeError(f"retry_policy must be a rhapsody.retry.RetryPolicy, got {type(policy).__name__}")
        self._tracker.retry_policy = policy

    async def sample_resources(self, timeout: float = 30.0) -> list[NodeSample]:
        """What the engine's nodes / workers use now, if the engine can tell
        (its optional ``sample_resources`` method); an empty list otherwise.
        Raises `BackendError` naming the engine if it does not answer within
        ``timeout`` seconds."""
        sampler = getattr(self.engine, "sample_resources", None)
        if sampler is None or self._lifecycle is not BackendState.RUNNING:
            return []
        t0 = time.monotonic()
        try:
            return list(await asyncio.wait_for(sampler(), timeout))
        except asyncio.TimeoutError:
            raise BackendError(
                f"{self._label} backend {self._name!r}: sampling resources did not finish within {timeout:g} s "
                f"(waited {time.monotonic() - t0:.1f} s)"
            ) from None

    def get_task(self, uid: str) -> BaseTask | None:
        """The task ``uid`` if it is in flight here."""
        handle = self._tracker.handles.get(uid)
        return None if handle is None else handle.task

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._name!r} engine={self._label} state={self._lifecycle.value}>"

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def create(cls, *args: Any, **kwargs: Any) -> Any:
        """Build and start in one step (rhapsody-py's factory): ``await
        XExecutionBackend.create(...)`` is ``await XExecutionBackend(...)``."""
        return await cls(*args, **kwargs).start()

    def __await__(self) -> Any:
        return self.start().__await__()

    async def __aenter__(self) -> Backend:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self) -> Backend:
        """Start the engine once; concurrent callers share the one start."""
        if self._lifecycle is BackendState.RUNNING:
            return self
        if self._lifecycle in (BackendState.SHUTTING_DOWN, BackendState.STOPPED):
            raise BackendError(f"backend {self._name!r} was shut down; create a new one")
        if self._starting is None:
            self._loop = loop = asyncio.get_running_loop()
            self._tracker.bind(loop)
            self._lifecycle = BackendState.STARTING
            self._starting = loop.create_task(self._run_start())
        await asyncio.shield(self._starting)
        return self

    async def _bounded(self, step: str, coro: Any, seconds: float) -> None:
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(coro, seconds)
        except asyncio.TimeoutError:
            raise BackendError(
                f"{self._label} backend {self._name!r}: {step} did not finish within {seconds:g} s (waited {time.monotonic() - t0:.1f} s)"
            ) from None

    async def _run_start(self) -> None:
        t0 = time.perf_counter()
        context = EngineContext(self._name, self.work_dir, self.log, self._tracker.post)
        try:
            await self._bounded("start", self.engine.start(context), self._start_timeout)
        except BaseException as exc:
            self._lifecycle = BackendState.FAILED
            self.log.error("backend.start_failed", error=f"{type(exc).__name__}: {exc}")
            try:
                await self._bounded("stop after a failed start", self.engine.stop(), self._stop_timeout)
            except Exception as stop_exc:  # noqa: BLE001 - the start error is the one to report
                self.log.warning("backend.cleanup_failed", error=str(stop_exc))
            raise
        self._lifecycle = BackendState.RUNNING
        self.log.info("backend.started", engine=self._label, seconds=round(time.perf_counter() - t0, 3))

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
        tracker = self._tracker
        in_flight = [h.task for h in tracker.handles.values()]
        if in_flight:
            self.log.info("backend.cancel_in_flight", tasks=len(in_flight))
            await asyncio.gather(*(self._cancel_one(t, "shutdown") for t in in_flight))
            for task in in_flight:  # the engine goes away: nothing of these will report again
                tracker.canceling.pop(task.uid, None)
                tracker.set_state(task, TaskState.CANCELED)
        try:
            if started:
                await self._bounded("stop", self.engine.stop(), self._stop_timeout)
        finally:
            tracker.clear_timers()
            for bg in list(self._background):
                bg.cancel()
            self._lifecycle = BackendState.STOPPED
            self.log.info("backend.stopped")

    # ----------------------------------------------------------------- submission
    async def submit_tasks(self, tasks: Iterable[BaseTask | dict[str, Any]]) -> list[BaseTask]:
        """Validate ``tasks`` and hand them to the engine; returns the task
        objects (dict descriptions become tasks). Bad input raises before
        anything is submitted; a task this backend can never run ends FAILED."""
        await self.start()
        return await self.hand_over(self.prepare(tasks))

    def prepare(self, tasks: Iterable[BaseTask | dict[str, Any]]) -> list[BaseTask]:
        """First half of `submit_tasks`: turn dicts into tasks, refuse bad input
        and ask the submit hook; raises before anything is submitted. A Session
        prepares every backend's share before any of them gets a task."""
        if self._lifecycle is not BackendState.RUNNING:
            raise BackendError(f"backend {self._name!r} is {self._lifecycle.value}; it accepts no tasks")
        batch = [t if isinstance(t, BaseTask) else _adopt(t) for t in tasks]
        if self._coming is not None:  # the engine's worker wakes while the checks and bookkeeping run
            self._coming(len(batch))
        seen: set[str] = set()
        handles = self._tracker.handles
        for task in batch:
            if task.uid in seen or task.uid in handles or task._future is not None or task.state is not TaskState.NEW:
                raise TaskValidationError(task.uid, "uid", "this task was already submitted; build a new task to run it again")
            seen.add(task.uid)
        if self._submit_impls:  # nobody listening: no hook call on the hot path
            self._hook.rhapsody_task_submit(backend=self, tasks=batch)
        return batch

    async def hand_over(self, batch: list[BaseTask]) -> list[BaseTask]:
        """Second half of `submit_tasks`: hand a `prepare`-d batch to the engine."""
        loop = self._loop  # (asyncio.get_running_loop() asks the kernel for the pid each time, in Python 3.11)
        assert loop is not None, "prepare() refuses a backend that has not started"
        tracker = self._tracker
        capacity = self.engine.capacity()
        accepted: list[TaskHandle] = []
        for task in batch:
            task._future = loop.create_future()
            task.attempt = 1
            problem = admission.rejection(task, self._name, self._kinds, capacity, self._accepted)
            launch = None
            if problem is None and isinstance(task, ComputeTask) and task.executable is not None:
                try:
                    launch = admission.launch_spec(task, self.work_dir)
                except TaskValidationError as exc:
                    problem = exc
            handle = TaskHandle(task, launch, tracker)
            tracker.handles[task.uid] = handle
            if problem is not None:
                tracker.set_state(task, TaskState.FAILED, exception=problem)
                continue
            tracker.submitted(task)
            accepted.append(handle)
        if accepted:
            try:  # (`_engine_submit`, inline: a coroutine less per submission)
                await self.engine.submit(accepted)
            except Exception as exc:  # noqa: BLE001 - the engine refused: the tasks say why
                self._submit_failed(accepted, exc)
        return batch

    async def _engine_submit(self, handles: list[TaskHandle]) -> None:
        try:
            await self.engine.submit(handles)
        except Exception as exc:  # noqa: BLE001 - the engine refused: the tasks say why
            self._submit_failed(handles, exc)

    def _submit_failed(self, handles: list[TaskHandle], exc: Exception) -> None:
        self.log.error("backend.submit_failed", tasks=len(handles), error=f"{type(exc).__name__}: {exc}")
        error = BackendError(f"{self._label} backend {self._name!r} could not submit the task: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        for handle in handles:
            if self._tracker.handles.get(handle.uid) is handle:
                self._tracker.set_state(handle.task, TaskState.FAILED, exception=error)

    async def _resubmit(self, handle: TaskHandle) -> None:
        """A retry whose backoff is over: the same task, a new handle, to the engine again."""
        task = handle.task
        if task.state.is_terminal or not self._tracker.take_retry(handle):
            return
        if self._lifecycle is not BackendState.RUNNING:
            self._tracker.set_state(task, TaskState.CANCELED)
            return
        self.log.info("task.resubmit", task=task.uid, attempt=task.attempt)
        await self._engine_submit([handle])

    def replay(self, restored: list[tuple[BaseTask, dict[str, Any]]]) -> None:
        """End ``prepare``-d tasks DONE with results kept from an earlier run
        (a Session's journal), without the engine: observers see SUBMITTED
        then DONE, and ``task.timestamps`` are the earlier run's."""
        loop = asyncio.get_running_loop()
        tracker = self._tracker
        for task, fields in restored:
            stamps = fields.pop("timestamps", {})
            task._future = loop.create_future()
            tracker.set_state(task, TaskState.SUBMITTED)
            tracker.set_state(task, TaskState.DONE, **fields)
            task.timestamps.update(stamps)

    def add_end_listener(self, listener: Callable[[BaseTask], Any]) -> None:
        """Call ``listener(task)`` on the event loop whenever a task ends (after its result fields are set)."""
        self._tracker.on_end.append(listener)

    def remove_end_listener(self, listener: Callable[[BaseTask], Any]) -> None:
        if listener in self._tracker.on_end:
            self._tracker.on_end.remove(listener)

    def add_state_observer(self, observer: Callable[[Any, BaseTask, TaskState, TaskState], Any]) -> None:
        """Call ``observer(backend, task, old_state, new_state)`` on the event loop at
        every transition of this backend's tasks, as the ``rhapsody_task_state_changed``
        hook is called (same moment, same arguments; an observer that raises is
        logged, the task goes on), but without a plugin manager in between: for an
        observer that watches every task, like telemetry."""
        if observer not in self._tracker.observers:
            self._tracker.observers.append(observer)

    def remove_state_observer(self, observer: Callable[[Any, BaseTask, TaskState, TaskState], Any]) -> None:
        if observer in self._tracker.observers:
            self._tracker.observers.remove(observer)

    # --------------------------------------------------------------- cancellation
    async def cancel_task(self, uid: str) -> bool:
        """Cancel one task by uid: True if it was stopped, False if unknown or ended."""
        task = self.get_task(uid)
        if task is None:
            return False
        return await self._cancel_one(task, "user")

    async def cancel_tasks(self, tasks: Iterable[BaseTask | str]) -> list[bool]:
        uids = [t if isinstance(t, str) else t.uid for t in tasks]
        return list(await asyncio.gather(*(self.cancel_task(uid) for uid in uids)))

    async def cancel_all_tasks(self) -> int:
        return sum(await self.cancel_tasks(list(self._tracker.handles)))

    async def _cancel_one(self, task: BaseTask, reason: str) -> bool:
        tracker = self._tracker
        tracker.flush()  # a start already reported is applied first: observers see RUNNING, then CANCELED
        handle = tracker.handles.get(task.uid)
        if handle is None or task.state.is_terminal:
            return False
        if task.uid in tracker.canceling:  # a cancel is already under way
            return True
        if tracker.cancel_retry(task):  # waiting for a retry: the engine no longer has it
            self._hook.rhapsody_task_cancel(backend=self, task=task, reason=reason)
            tracker.set_state(task, TaskState.CANCELED)
            return True
        tracker.canceling[task.uid] = reason
        self._hook.rhapsody_task_cancel(backend=self, task=task, reason=reason)
        try:
            stopped = await self.engine.cancel(handle)
        except Exception as exc:  # noqa: BLE001 - a cancel that blew up did not stop the task
            self.log.warning("task.cancel_failed", task=task.uid, error=f"{type(exc).__name__}: {exc}")
            stopped = False
        if task.state.is_terminal:
            return stopped and task.state is not TaskState.DONE
        if stopped:
            tracker.set_state(task, TaskState.CANCELED)
            return True
        tracker.canceling.pop(task.uid, None)
        return False

    def _spawn(self, coro: Any) -> None:
        bg = asyncio.ensure_future(coro)
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    # ------------------------------------------ the radical.asyncflow backend protocol
    def register_callback(self, func: Callable[[Any, str], Any]) -> None:
        """Call ``func(task, state)`` on every transition (``task`` is the dict a
        caller submitted, or the task object)."""
        if func not in self._tracker.callbacks:
            self._tracker.callbacks.append(func)

    def get_task_states_map(self) -> StateMap:
        return StateMap()

    def task_state_cb(self, task: Any, state: str) -> None:
        """Part of the asyncflow protocol; transitions flow through the hook instead."""

    def build_task(self, *args: Any, **kwargs: Any) -> None:
        """Part of the asyncflow protocol: tasks are built on submission."""

    def link_implicit_data_deps(self, src_task: Any, dst_task: Any) -> None:
        """No data staging: this backend shares the submitter's filesystem."""

    def link_explicit_data_deps(self, src_task: Any = None, dst_task: Any = None, file_name: Any = None, file_path: Any = None) -> None:
        """No data staging: this backend shares the submitter's filesystem."""


def _adopt(task: BaseTask | dict[str, Any]) -> BaseTask:
    if isinstance(task, BaseTask):
        return task
    if isinstance(task, dict):  # radical.asyncflow and other dict-speaking callers
        adopted = task_from_dict(task)
        adopted._origin = task
        return adopted
    raise TaskValidationError(None, "<task>", f"expected a task object or a dict, got {type(task).__name__}")
