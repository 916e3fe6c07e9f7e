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
import os
import queue
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from rhapsody.engine import EngineContext, TaskHandle, core_count
from rhapsody.engine.sampling import LocalNodeSampler
from rhapsody.errors import BackendError, ResourceError
from rhapsody.execution.backend import Backend
from rhapsody.resources import Capacity, NodeSample
from rhapsody_dragon import functions
from rhapsody_dragon.batch_tasks import BatchEntry
from rhapsody_dragon.runtime import RuntimeLease, engine_error, scrub
from rhapsody_dragon.wrapper import setsid_problem

#: how many times `start` tries to bring up a Batch before the backend fails to start
BATCH_START_ATTEMPTS = 2
_NO_WAIT = threading.Event()
_NO_WAIT.set()


def batch_worker_limit() -> int:
    """Most Batch workers per node: Batch allows one per physical core, which it
    counts as half the node's logical CPUs."""
    return max(1, core_count() // 2)


class BatchEngine:
    engine_name: ClassVar[str] = "dragon-batch"
    accepted_keys: ClassVar[frozenset[str]] = frozenset({"process_template", "process_templates", "policy"})

    def __init__(self, num_workers: int, disable_telemetry: bool, background: bool, stream: bool, batch_kwargs: dict[str, Any]) -> None:
        self.num_workers, self.disable_telemetry = num_workers, disable_telemetry
        self.background, self.stream = background, stream
        self.batch_kwargs = batch_kwargs
        self.batch: Any = None
        self._lock = threading.Lock()
        self._entries: dict[str, BatchEntry] = {}
        self._by_tuid: dict[str, BatchEntry] = {}
        self._canceled: set[str] = set()
        self._inbox: queue.Queue[list[BatchEntry] | None] = queue.Queue()
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lease = RuntimeLease()
        self._sampler: LocalNodeSampler | None = None

    def capacity(self) -> Capacity:
        # A Batch job of more ranks than one node's workers waits forever on one node.
        return Capacity(cores_per_rank=core_count(), ranks=self.num_workers, gpus=0, gpus_per_rank=0)

    async def sample_resources(self) -> list[NodeSample]:
        """The node this process runs on. On a multi-node runtime the other
        nodes are not sampled (yet): telemetry shows the head node only."""
        if self._sampler is None:
            self._sampler = LocalNodeSampler()
        return self._sampler.sample()

    # ------------------------------------------------------------------ engine
    async def start(self, context: EngineContext) -> None:
        self._log, self._dir = context.log, Path(context.work_dir)
        problem = setsid_problem()
        if problem is not None:
            raise BackendError(problem)
        self._dir.mkdir(parents=True, exist_ok=True)
        await self._lease.acquire()
        for attempt in range(1, BATCH_START_ATTEMPTS + 1):
            try:
                self.batch = await asyncio.to_thread(self._make_batch)
                break
            except (queue.Empty, TimeoutError, RuntimeError) as exc:
                # Batch() waits up to 30 s for its managers; one that crashed while
                # bootstrapping (seen in Dragon 0.15: DRAGON_LOCK_ALREADY_INITD in a manager's
                # process-local channel) leaves it waiting in vain. A fresh Batch usually starts.
                if attempt == BATCH_START_ATTEMPTS:
                    raise BackendError(
                        f"Dragon Batch did not start ({attempt} attempts): {type(exc).__name__}: {exc}".rstrip(": ")
                    ) from exc
                self._log.warning("batch.start_retry", attempt=attempt, error=f"{type(exc).__name__}: {exc}")
        for target, label in ((self._monitor_loop, "monitor"), (self._submit_loop, "submitter")):
            th = threading.Thread(target=target, daemon=True, name=f"rhapsody-{context.name}-{label}")
            th.start()
            self._threads.append(th)

    def _make_batch(self) -> Any:
        from dragon.workflows.batch import Batch  # noqa: PLC0415

        return Batch(disable_telem=self.disable_telemetry, workers_per_node=self.num_workers, **self.batch_kwargs)

    async def stop(self) -> None:
        self._halt.set()
        self._inbox.put(None)
        for th in self._threads:
            await asyncio.to_thread(th.join, 10)
        if self.batch is not None:
            await asyncio.to_thread(self._close_batch)
        await self._lease.release()

    def _close_batch(self) -> None:
        b, self.batch = self.batch, None
        try:
            b.join(timeout=30)
        except Exception as exc:  # noqa: BLE001
            self._log.warning("batch.join_failed", error=type(exc).__name__)
            try:
                b.terminate(timeout=5.0)
            except Exception as exc2:  # noqa: BLE001
                self._log.warning("batch.terminate_failed", error=type(exc2).__name__)

    # ------------------------------------------------------------------ submit
    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        entries = []
        for handle in handles:
            e = BatchEntry(handle, str(self._dir / f"{handle.uid}.v3"))
            if len(e.ranks) > self.num_workers:
                limit = self.num_workers
                handle.failed(
                    ResourceError(f"task {handle.uid} asks for {len(e.ranks)} ranks; this Batch places at most {limit} on one node")
                )
                continue
            handle.engine_data = e
            entries.append(e)
        with self._lock:
            for e in entries:
                self._entries[e.handle.uid] = e
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
            entries = list(first)
            while True:  # coalesce calls that queued up meanwhile
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._inbox.put(None)
                    break
                entries.extend(more)
            self._create(entries, False)

    def _create(self, entries: list[BatchEntry], flush: bool) -> None:
        for e in entries:
            with self._lock:
                if e.handle.uid in self._canceled or self._halt.is_set():
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
        if flush is not None:  # private in 0.15; without it Batch still dispatches within ~5 ms
            flush(timeout=60)

    # ------------------------------------------------------------------ events
    def _monitor_loop(self) -> None:
        while not self._halt.is_set():
            try:
                tuid = self.batch.poll(timeout=0.1)
            except Exception as exc:  # noqa: BLE001
                if not self._halt.is_set():
                    self._log.error("batch.poll_failed", error=type(exc).__name__)
                    self._halt.wait(0.5)
                continue
            self._check_started()
            if tuid is None:
                continue
            with self._lock:
                e = self._by_tuid.pop(tuid, None)
                if e is not None and self._entries.pop(e.handle.uid, None) is None:
                    e = None  # cancelled meanwhile
            if e is not None:
                self._finish(e)

    def _check_started(self) -> None:
        with self._lock:
            waiting = [e for e in self._entries.values() if not e.started and e.dtask is not None]
        for e in waiting:
            if e.has_started():
                e.started = True
                e.handle.running()

    def _finish(self, e: BatchEntry) -> None:
        handle = e.handle
        try:
            value = e.dtask.get(timeout=60)
        except Exception as exc:  # noqa: BLE001 - Batch itself failed the task
            if type(exc).__name__ == "TaskCancelledError":
                handle.canceled()
            else:
                env = handle.launch.env if handle.launch else None
                trace = getattr(e.dtask, "traceback", None)
                handle.failed(engine_error(f"Dragon Batch failed task {handle.uid}", exc, env), stderr=scrub(trace, env) if trace else None)
            self._cleanup(e)
            return
        if e.wrapped is not None:
            handle.finish(e.wrapped.outcome(value if isinstance(value, list) else [value]))
        else:
            functions.finish_packed(handle, value)
        self._cleanup(e)

    @staticmethod
    def _cleanup(e: BatchEntry) -> None:
        if e.wrapped is not None:
            e.wrapped.cleanup()
        with contextlib.suppress(OSError):
            os.unlink(e.base + ".started")

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


class DragonBatchExecutionBackend(Backend):
    """Dragon Batch backend. ``num_workers`` -> Batch ``workers_per_node``
    (Batch allows at most one per physical core; more is clamped with a warning);
    ``disable_telemetry`` -> Batch ``disable_telem``; ``disable_batch_submission``
    selects stream mode; ``disable_background_batching``: Dragon 0.15 has no such
    switch, see the warning it gives. ``batch_kwargs`` go to ``Batch()`` verbatim."""

    engine: BatchEngine

    def __init__(
        self,
        name: str = "dragon",
        num_workers: int | None = None,
        disable_telemetry: bool = False,
        disable_background_batching: bool = False,
        disable_batch_submission: bool = False,
        batch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        limit = batch_worker_limit()
        if num_workers is not None and (not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1):
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        if num_workers is not None and num_workers > limit:
            warnings.warn(
                f"num_workers={num_workers}: Dragon 0.15 Batch takes workers_per_node, at most one per physical core "
                f"({limit} here); using workers_per_node={limit}",
                UserWarning,
                stacklevel=2,
            )
        if disable_background_batching:
            warnings.warn(
                "disable_background_batching=True: Dragon 0.15 Batch has no background-batching switch (its client "
                "always groups tasks created within ~5 ms). Mapped to: each submit_tasks call creates its tasks in "
                "the caller's turn and flushes Batch's client queue before returning, instead of handing them to "
                "RHAPSODY's background submitter (which coalesces consecutive calls)",
                UserWarning,
                stacklevel=2,
            )
        workers = min(num_workers or limit, limit)
        kwargs = {"results_ddict_mem": 64 << 20, **(batch_kwargs or {})}
        engine = BatchEngine(workers, bool(disable_telemetry), not disable_background_batching, bool(disable_batch_submission), kwargs)
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


#: the names earlier releases gave this backend
DragonExecutionBackendV3 = DragonBatchExecutionBackend
DragonExecutionBackend = DragonBatchExecutionBackend
