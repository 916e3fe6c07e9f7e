"""V3: tasks run on ``dragon.workflows.batch.Batch`` (Dragon 0.15).

Batch mode (default): the tasks of one ``submit_tasks`` call are created
back-to-back, so Batch's client compiles them into one multi-task unit (it
groups tasks created within ~5 ms, up to 256). Stream mode
(``disable_batch_submission=True``): each task is created and flushed on its
own, so Batch dispatches and tracks it as a batch of one.

Batch has no "started" event: a function task first writes
``<uid>.v3.started``, an executable's wrapper (`rhapsody_dragon.wrapper`) its
pid file, and the monitor reports RUNNING when that appears. Completions come
from ``Batch.poll()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rhapsody.engine import EngineContext, TaskHandle, core_count
from rhapsody.errors import BackendError, ResourceError, TaskValidationError
from rhapsody.execution.backend import Backend
from rhapsody.resources import Capacity
from rhapsody_dragon.batch_tasks import BatchEntry
from rhapsody_dragon.node_samplers import SamplesEachNode
from rhapsody_dragon.runtime import (
    NodeShape,
    OneNodeCapacity,
    RuntimeLease,
    StepTimeout,
    bounded,
    call_bounded,
    engine_error,
    scrub,
    scrubbed,
    wait_bounded,
)
from rhapsody_dragon.wrapper import setsid_problem

#: how many times `start` tries to bring up a Batch before the backend fails to start
BATCH_START_ATTEMPTS = 2
#: default seconds the whole start may take (the runtime, then every Batch() attempt)
START_TIMEOUT = 300.0
#: default seconds `DragonBatchExecutionBackend.fence` waits
FENCE_TIMEOUT = 3600.0
#: default seconds `DragonBatchExecutionBackend.create_ddict` waits for the DDict
DDICT_TIMEOUT = 120.0
#: seconds each step of a stop (Batch.join, Batch.terminate) may take
STOP_STEP_TIMEOUT = 60.0
#: seconds ``Batch.poll`` may keep failing before no task is expected to end any more
POLL_FAILING_FOR = 60.0
_NO_WAIT = threading.Event()
_NO_WAIT.set()


def _terminate_late(batch: Any) -> None:
    """A Batch whose bootstrap was abandoned and that came up after all."""
    wait_bounded(lambda: batch.terminate(timeout=5.0), STOP_STEP_TIMEOUT, "late-batch-terminate")


def batch_worker_limit() -> int:
    """Most Batch workers per node: Batch allows one per physical core, which it
    counts as half the node's logical CPUs."""
    return max(1, core_count() // 2)


class BatchEngine(SamplesEachNode, OneNodeCapacity):
    engine_name: ClassVar[str] = "dragon-batch"
    accepted_keys: ClassVar[frozenset[str]] = frozenset({"process_template", "process_templates", "policy", "timeout"})

    def __init__(self, background: bool, stream: bool, batch_kwargs: dict[str, Any], start_timeout: float) -> None:
        self.num_workers = int(batch_kwargs.get("workers_per_node") or batch_worker_limit())
        self.disable_telemetry = bool(batch_kwargs.get("disable_telem"))
        self.background, self.stream = background, stream
        self.batch_kwargs = batch_kwargs
        self.start_deadline = start_timeout
        self.start_timeout = start_timeout + 30.0  # core's deadline: later than ours, which names the step
        self._name = "dragon"
        self.batch: Any = None
        self._lock = threading.Lock()
        self._entries: dict[str, BatchEntry] = {}
        self._by_tuid: dict[str, BatchEntry] = {}
        self._canceled: set[str] = set()
        self._broken: str | None = None  # why no task can end any more (see _break)
        self._inbox: queue.Queue[list[BatchEntry] | threading.Event | None] = queue.Queue()
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lease = RuntimeLease(self._halt_at_exit)

    def _capacity_on(self, node: NodeShape) -> Capacity:
        # A Batch job of more ranks than one node's workers waits forever on one node.
        return Capacity(cores_per_rank=node.cores, ranks=self.num_workers, gpus=node.gpus, gpus_per_rank=node.gpus_per_node)

    # ------------------------------------------------------------------ engine
    async def start(self, context: EngineContext) -> None:
        self._log, self._dir, self._name = context.log, Path(context.work_dir), context.name
        t0 = time.monotonic()
        problem = setsid_problem()
        if problem is not None:
            raise BackendError(problem)
        self._dir.mkdir(parents=True, exist_ok=True)
        await self._lease.acquire()
        await self._read_node(f"{self.engine_name} backend {self._name!r}")
        self.batch = await self._bootstrap(t0)
        for target, label in ((self._monitor_loop, "monitor"), (self._submit_loop, "submitter")):
            th = threading.Thread(target=target, daemon=True, name=f"rhapsody-{context.name}-{label}")
            th.start()
            self._threads.append(th)

    async def _bootstrap(self, t0: float) -> Any:
        """``Batch()``, tried up to `BATCH_START_ATTEMPTS` times within the
        backend's ``start_timeout`` (what is left of it shared among the
        attempts left). Batch() waits up to 30 s for its managers, and one that
        crashed while bootstrapping (Dragon 0.15: DRAGON_LOCK_ALREADY_INITD in a
        manager's channel) leaves it waiting in vain; it also once blocked for
        15 minutes inside its results DDict's creation. A fresh Batch usually
        starts. An abandoned attempt that returns late is terminated."""
        errors = []
        for attempt in range(1, BATCH_START_ATTEMPTS + 1):
            left = self.start_deadline - (time.monotonic() - t0)
            seconds = max(1.0, left / (BATCH_START_ATTEMPTS - attempt + 1))
            step = f"start step Batch() bootstrap (attempt {attempt} of {BATCH_START_ATTEMPTS})"
            try:
                return await bounded(self._make_batch, seconds, f"{self.engine_name} backend {self._name!r}", step, _terminate_late)
            except (StepTimeout, queue.Empty, TimeoutError, RuntimeError) as exc:
                errors.append(str(exc) if isinstance(exc, StepTimeout) else f"{step}: {scrubbed(exc)}")
                event = "batch.start_retry" if attempt < BATCH_START_ATTEMPTS else "batch.start_failed"
                self._log.warning(event, attempt=attempt, error=errors[-1])
        raise BackendError(f"{self.engine_name} backend {self._name!r}: Dragon Batch did not start: " + "; ".join(errors))

    def _make_batch(self) -> Any:
        from dragon.workflows.batch import Batch  # noqa: PLC0415

        return Batch(**self.batch_kwargs)

    def _halt_threads(self) -> None:
        self._halt.set()
        self._inbox.put(None)

    def _halt_at_exit(self) -> None:
        """The runtime stops under this engine (the program exits with it
        open): stop the threads and the Batch, whose ProcessGroup client
        would otherwise keep a thread waiting on the dead runtime for ever."""
        self._halt_threads()
        b, self.batch = self.batch, None
        if b is not None:
            wait_bounded(lambda: b.terminate(timeout=5.0), STOP_STEP_TIMEOUT, "batch-terminate")

    async def stop(self) -> None:
        self._halt_threads()
        try:
            await self._stop_node_samplers()
            for th in self._threads:
                await asyncio.to_thread(th.join, 10)  # they wake up at least every 0.1 s
            if self.batch is not None:
                await self._close_batch()
        finally:
            await self._lease.release()

    async def _close_batch(self) -> None:
        """``Batch.join`` with a deadline, ``terminate`` with one if it fails."""
        b, self.batch = self.batch, None
        label = f"{self.engine_name} backend {self._name!r}"
        try:
            await bounded(lambda: b.join(timeout=STOP_STEP_TIMEOUT), STOP_STEP_TIMEOUT, label, "stop step Batch.join")
            return
        except Exception as exc:  # noqa: BLE001
            self._log.warning("batch.join_failed", error=f"{type(exc).__name__}: {exc}")
        await bounded(lambda: b.terminate(timeout=5.0), STOP_STEP_TIMEOUT, label, "stop step Batch.terminate")

    # ------------------------------------------------------------------ submit
    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        entries = []
        for handle in handles:
            try:
                e = BatchEntry(handle, str(self._dir / f"{handle.uid}.v3"))
            except TaskValidationError as exc:
                handle.failed(exc)
                continue
            if len(e.ranks) > self.num_workers:
                limit = self.num_workers
                handle.failed(
                    ResourceError(f"task {handle.uid} asks for {len(e.ranks)} ranks; this Batch places at most {limit} on one node")
                )
                continue
            handle.engine_data = e
            entries.append(e)
        with self._lock:
            broken = self._broken  # read under the lock `_break` holds (see pool.py's submit)
            if broken is None:
                for e in entries:
                    self._entries[e.handle.uid] = e
        if broken is not None:
            for e in entries:
                e.handle.failed(self._broken_error(e.handle))
            return
        if not entries:
            return
        if self.background:
            self._inbox.put(entries)
        else:
            await asyncio.to_thread(self._create, entries, True)

    def _submit_loop(self) -> None:
        while True:
            first = self._inbox.get()
            if first is None:
                return
            if isinstance(first, threading.Event):  # a fence: everything before it is created
                first.set()
                continue
            entries, marks = list(first), []
            while True:  # coalesce calls that queued up meanwhile
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._inbox.put(None)
                    break
                if isinstance(more, threading.Event):
                    marks.append(more)
                    continue
                entries.extend(more)
            try:
                self._create(entries, False)
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any one batch
                self._refuse_unhanded(entries, exc)
            for mark in marks:
                mark.set()

    def _refuse_unhanded(self, entries: list[BatchEntry], exc: Exception) -> None:
        """Fail the ``entries`` that creating them did not hand to Batch (the
        others end through Batch as usual)."""
        self._log.error("batch.create_failed", error=f"{type(exc).__name__}: {exc}")
        for e in entries:
            with self._lock:
                if e.dtask is not None or self._entries.pop(e.handle.uid, None) is None:
                    continue
            env = e.handle.launch.env if e.handle.launch else None
            e.handle.failed(engine_error(f"Dragon Batch did not take task {e.handle.uid}", exc, env))

    def fence(self, name: str, timeout: float) -> None:
        """Every task submitted so far created in Batch, then ``Batch.fence``,
        all within ``timeout`` s."""
        if self.batch is None:
            raise BackendError(f"{self.engine_name} backend {name!r} is not running: nothing to fence")
        t0 = time.monotonic()
        label = f"{self.engine_name} backend {name!r}"
        if self.background:
            created = threading.Event()
            self._inbox.put(created)
            if not created.wait(timeout):
                raise StepTimeout(f"{label}: fence step creating the tasks submitted so far did not finish within {timeout:g} s")
        left = max(0.1, timeout - (time.monotonic() - t0))
        batch = self.batch
        call_bounded(lambda: batch.fence(timeout=left), left, label, "fence step Batch.fence")

    def create_ddict(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float) -> Any:
        from dragon.data.ddict.ddict import DDict  # noqa: PLC0415

        return call_bounded(lambda: DDict(*args, **kwargs), timeout, f"{self.engine_name} backend {name!r}", "create_ddict step DDict()")

    def _create(self, entries: list[BatchEntry], flush: bool) -> None:
        for e in entries:
            with self._lock:
                # (a broken engine already failed it: `_break` fails every entry)
                if e.handle.uid in self._canceled or self._halt.is_set() or self._broken is not None:
                    self._canceled.discard(e.handle.uid)
                    continue
            try:
                e.dtask = e.make(self.batch)
            except Exception as exc:  # noqa: BLE001 - this task cannot be built; the rest can
                env = e.handle.launch.env if e.handle.launch else None
                e.handle.failed(engine_error(f"Dragon Batch refused task {e.handle.uid}", exc, env))
            if e.dtask is None:
                with self._lock:
                    self._entries.pop(e.handle.uid, None)
                continue
            with self._lock:
                self._by_tuid[e.dtask.uid] = e
            if self.stream:
                self._flush()
        if flush and not self.stream:
            self._flush()

    def _flush(self) -> None:
        flush = getattr(self.batch, "_flush_client_request_worker", None)
        if flush is None:  # private in 0.15; without it Batch still dispatches within ~5 ms
            return
        try:
            flush(timeout=60)
        except Exception as exc:  # noqa: BLE001 - a speed-up only: the tasks are created and go out anyway
            self._log.warning("batch.flush_failed", error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ events
    def _monitor_loop(self) -> None:
        failing_since: float | None = None
        while not self._halt.is_set():
            try:
                tuid = self.batch.poll(timeout=0.1)
            except Exception as exc:  # noqa: BLE001
                if self._halt.is_set():
                    continue
                failing_since = failing_since or time.monotonic()
                failing_for = time.monotonic() - failing_since
                self._log.error("batch.poll_failed", error=f"{type(exc).__name__}: {exc}", failing_for=round(failing_for, 1))
                if failing_for >= POLL_FAILING_FOR:  # a transient failure passes; this one did not
                    self._break(f"Batch.poll failed for {failing_for:.0f} s; the last time: {type(exc).__name__}: {exc}")
                    return
                self._halt.wait(0.5)
                continue
            failing_since = None
            self._check_started()
            if tuid is None:
                continue
            with self._lock:
                e = self._by_tuid.pop(tuid, None)
                if e is not None and self._entries.pop(e.handle.uid, None) is None:
                    e = None  # cancelled meanwhile
            if e is not None:
                try:
                    self._finish(e)
                except Exception as exc:  # noqa: BLE001 - this thread must outlive any one task
                    self._log.error("batch.finish_failed", task=e.handle.uid, error=f"{type(exc).__name__}: {exc}")
                    e.handle.failed(BackendError(f"task {e.handle.uid}: reading how it ended failed: {type(exc).__name__}: {exc}"))
                    with contextlib.suppress(Exception):
                        self._cleanup(e)

    def _break(self, reason: str) -> None:
        """Nothing more can be heard from Batch: every task in flight fails with
        ``reason``, and so does every task submitted from now on."""
        with self._lock:
            self._broken = reason
            entries = list(self._entries.values())
            self._entries.clear()
            self._by_tuid.clear()
        for e in entries:
            e.handle.failed(self._broken_error(e.handle))
            with contextlib.suppress(Exception):
                if e.wrapped is not None:  # its program may still run: stopped here, as a cancel does
                    e.wrapped.stop(_NO_WAIT)
                self._cleanup(e)

    def _broken_error(self, handle: TaskHandle) -> BackendError:
        return BackendError(f"task {handle.uid}: {self.engine_name} backend {self._name!r}: {self._broken}")

    def _check_started(self) -> None:
        with self._lock:
            waiting = [e for e in self._entries.values() if not e.started and e.dtask is not None]
        for e in waiting:
            where = e.started_where()
            if where is not None:
                e.started = True
                e.handle.running(where)

    def _finish(self, e: BatchEntry) -> None:
        handle = e.handle
        try:
            value = e.dtask.get(timeout=60)
        except Exception as exc:  # noqa: BLE001 - Batch itself failed the task
            self._failed(e, exc)
            self._cleanup(e)
            return
        e.finish(handle, value)
        self._cleanup(e)

    def _failed(self, e: BatchEntry, exc: Exception) -> None:
        handle = e.handle
        if type(exc).__name__ == "TaskCancelledError":
            handle.canceled()
            return
        codes = e.recorded_end()
        if codes is not None:  # its processes ended and left their outcome; Batch failed it afterwards
            self._log.warning("batch.failed_after_end", task=handle.uid, codes=codes, error=f"{type(exc).__name__}: {exc}")
            e.finish(handle, codes)
            return
        if e.wrapped is not None:  # Batch stopped the wrapper (timeout): its program's group is stopped here
            e.wrapped.stop(_NO_WAIT)
        # Batch ends a timed-out process task with an exit code (handled in finish) or, seen
        # under load, with an internal error of its own: past the timeout, the timeout did it.
        if e.timeout is not None and (isinstance(exc, TimeoutError) or time.monotonic() - e.created_at >= e.timeout):
            handle.failed(TimeoutError(f"task {handle.uid}: Dragon Batch stopped it at its timeout of {e.timeout:g} s"))
            return
        env = handle.launch.env if handle.launch else None
        trace = getattr(e.dtask, "traceback", None)
        handle.failed(engine_error(f"Dragon Batch failed task {handle.uid}", exc, env), stderr=scrub(trace, env) if trace else None)

    @staticmethod
    def _cleanup(e: BatchEntry) -> None:
        e.cleanup()

    # ------------------------------------------------------------------ cancel
    async def cancel(self, handle: TaskHandle) -> bool:
        with self._lock:
            e = self._entries.pop(handle.uid, None)
            if e is None:
                return False
            if e.dtask is None:  # not handed to Batch yet: it never will be
                self._canceled.add(handle.uid)
                return True
            self._by_tuid.pop(e.dtask.uid, None)
        try:
            ok = await asyncio.to_thread(e.dtask.cancel, 30)
        except Exception as exc:  # noqa: BLE001
            self._log.warning("task.cancel_failed", task=handle.uid, error=type(exc).__name__)
            ok = False
        if not ok:  # it ended meanwhile: deliver what it did
            await asyncio.to_thread(self._finish, e)
            return False
        if e.wrapped is not None:  # Batch stopped the wrapper; its program's group is stopped here
            await asyncio.to_thread(e.wrapped.stop, _NO_WAIT)
        self._cleanup(e)
        return True


#: this project's positional order, after ``name``; upstream's is (batch_kwargs, name)
_OWN_ORDER = ("name", "num_workers", "disable_telemetry", "disable_background_batching", "disable_batch_submission", "batch_kwargs")
_UPSTREAM_ORDER = ("batch_kwargs", "name")


def _positional(args: tuple[Any, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Positional arguments by name. A first argument that is a str is this
    project's ``name``; a dict (or None) is rhapsody-py 0.6's ``batch_kwargs``."""
    if not args:
        return {}
    order: tuple[str, ...]
    if isinstance(args[0], str):
        order = _OWN_ORDER
    elif args[0] is None or isinstance(args[0], Mapping):
        order = _UPSTREAM_ORDER
    else:
        raise TypeError(
            f"DragonBatchExecutionBackend: first argument must be a name (str) or batch_kwargs (dict), got {type(args[0]).__name__}"
        )
    if len(args) > len(order):
        raise TypeError(f"DragonBatchExecutionBackend takes at most {len(order)} positional arguments in this form ({', '.join(order)})")
    named = dict(zip(order, args, strict=False))
    twice = sorted(k for k in named if given.get(k) is not None)
    if twice:
        raise TypeError(f"DragonBatchExecutionBackend got multiple values for {', '.join(twice)}")
    return named


class DragonBatchExecutionBackend(Backend):
    """Dragon Batch backend (``dragon.workflows.batch.Batch``).

    Two call shapes: this project's ``(name="dragon", num_workers=None,
    disable_telemetry=False, disable_background_batching=False,
    disable_batch_submission=False, batch_kwargs=None)`` and rhapsody-py 0.6's
    ``(batch_kwargs=None, name="dragon")``; positionally, a first argument that
    is a str is the name, a dict the batch_kwargs.

    ``num_workers`` -> Batch ``workers_per_node`` (at most one per physical
    core; more is clamped with a warning); ``disable_telemetry`` -> Batch
    ``disable_telem``; ``disable_batch_submission`` selects stream mode;
    ``disable_background_batching``: Dragon 0.15 has no such switch, see the
    warning it gives. ``batch_kwargs`` go to ``Batch()`` and win over those.
    ``start_timeout``: seconds the whole start may take (the runtime, then up to
    two ``Batch()`` bootstraps sharing what is left); then a `BackendError`
    naming the step and the seconds waited."""

    engine: BatchEngine

    def __init__(
        self,
        *args: Any,
        name: str | None = None,
        num_workers: int | None = None,
        disable_telemetry: bool = False,
        disable_background_batching: bool = False,
        disable_batch_submission: bool = False,
        batch_kwargs: Mapping[str, Any] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        given = {"name": name, "num_workers": num_workers, "batch_kwargs": batch_kwargs}
        named = _positional(args, given)
        name = named.get("name", name) or "dragon"
        num_workers = named.get("num_workers", num_workers)
        disable_telemetry = named.get("disable_telemetry", disable_telemetry)
        disable_background_batching = named.get("disable_background_batching", disable_background_batching)
        disable_batch_submission = named.get("disable_batch_submission", disable_batch_submission)
        batch_kwargs = named.get("batch_kwargs", batch_kwargs)
        if batch_kwargs is not None and not isinstance(batch_kwargs, Mapping):
            raise TypeError(f"batch_kwargs must be a dict, got {type(batch_kwargs).__name__}")
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float)) or start_timeout <= 0:
            raise ValueError(f"start_timeout must be a positive number of seconds, got {start_timeout!r}")
        workers = _workers(num_workers)
        if disable_background_batching:
            warnings.warn(
                "disable_background_batching=True: Dragon 0.15 Batch has no background-batching switch (its client "
                "always groups tasks created within ~5 ms). Mapped to: each submit_tasks call creates its tasks in "
                "the caller's turn and flushes Batch's client queue before returning, instead of handing them to "
                "RHAPSODY's background submitter (which coalesces consecutive calls)",
                UserWarning,
                stacklevel=2,
            )
        kwargs = {
            "disable_telem": bool(disable_telemetry),
            "workers_per_node": workers,
            "results_ddict_mem": 64 << 20,
            **(batch_kwargs or {}),
        }
        engine = BatchEngine(not disable_background_batching, bool(disable_batch_submission), kwargs, float(start_timeout))
        super().__init__(engine, name)

    @property
    def num_workers(self) -> int:
        """Batch workers per node."""
        return self.engine.num_workers

    @property
    def disable_telemetry(self) -> bool:
        return self.engine.disable_telemetry

    @property
    def disable_background_batching(self) -> bool:
        return not self.engine.background

    @property
    def disable_batch_submission(self) -> bool:
        return self.engine.stream

    @property
    def batch(self) -> Any:
        """The ``dragon.workflows.batch.Batch`` (after start)."""
        return self.engine.batch

    def fence(self, timeout: float | None = None) -> None:
        """Block until every task submitted to this backend so far has ended
        in Batch (``Batch.fence``): tasks submitted afterwards start after
        that. ``timeout`` (default `FENCE_TIMEOUT`): then a `BackendError`.
        Blocking, as in rhapsody-py: from async code, ``await
        asyncio.to_thread(backend.fence)`` keeps the event loop running."""
        self.engine.fence(self.name, FENCE_TIMEOUT if timeout is None else timeout)

    def wait(self, timeout: float | None = None) -> None:
        """rhapsody-py 0.6's name for `fence`."""
        self.fence(timeout)

    def create_ddict(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """A ``dragon.data.ddict.DDict(*args, **kwargs)`` on this backend's
        runtime (start the backend first); the caller destroys it. Created
        within ``timeout`` s (default `DDICT_TIMEOUT`), else a `BackendError`."""
        if self.state() != "RUNNING":
            raise BackendError(f"backend {self.name!r} is {self.state()}: start it before creating a DDict on its runtime")
        return self.engine.create_ddict(self.name, args, kwargs, DDICT_TIMEOUT if timeout is None else timeout)


def _workers(num_workers: Any) -> int:
    """Batch ``workers_per_node``: at most one per physical core."""
    limit = batch_worker_limit()
    if num_workers is None:
        return limit
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    if num_workers > limit:
        warnings.warn(
            f"num_workers={num_workers}: Dragon 0.15 Batch takes workers_per_node, at most one per physical core "
            f"({limit} here); using workers_per_node={limit}",
            UserWarning,
            stacklevel=3,
        )
    return min(num_workers, limit)


#: the names earlier releases gave this backend
DragonExecutionBackendV3 = DragonBatchExecutionBackend
DragonExecutionBackend = DragonBatchExecutionBackend
