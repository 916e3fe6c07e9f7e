"""V3: tasks run on ``dragon.workflows.batch.Batch`` (Dragon 0.15).

Batch mode (default): the tasks of one ``submit_tasks`` call are created
back-to-back, so Batch's client compiles them into one multi-task unit (it
groups tasks created within ~5 ms, up to 256). Stream mode
(``disable_batch_submission=True``): each task is created and flushed on its
own, so Batch dispatches and tracks it as a batch of one.

Batch has no "started" event: each task first writes ``<uid>.v3.started`` in the
session directory and the monitor reports RUNNING when it appears. Completions
come from ``Batch.poll()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from rhapsody.errors import BackendError, ResourceError
from rhapsody.resources import Resources
from rhapsody.task import BaseTask, ComputeTask
from rhapsody_dragon import _worker
from rhapsody_dragon._common import DragonBackendBase, command_of, import_dragon, pack_function, resolve

_WRAP = ': >"$0.started"; exec "$@" >>"$0.out" 2>>"$0.err"'


def _physical_cores() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


class _Entry:
    def __init__(self, task: ComputeTask, base: str) -> None:
        self.task, self.base = task, base
        self.dtask: Any = None
        self.started = False


#: how many times `_start` tries to bring up a Batch before the backend fails to start
BATCH_START_ATTEMPTS = 2


class DragonExecutionBackendV3(DragonBackendBase):
    """Dragon Batch backend. ``num_workers`` -> Batch ``workers_per_node``
    (Batch allows at most one per physical core; more is clamped with a warning);
    ``disable_telemetry`` -> Batch ``disable_telem``; ``disable_batch_submission``
    selects stream mode; ``disable_background_batching``: Dragon 0.15 has no such
    switch, see the class warning. ``batch_kwargs`` go to ``Batch()`` verbatim."""

    def __init__(
        self,
        name: str = "dragon",
        num_workers: int | None = None,
        disable_telemetry: bool = False,
        disable_background_batching: bool = False,
        disable_batch_submission: bool = False,
        batch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name)
        physical = _physical_cores()
        if num_workers is None:
            workers = physical
        elif not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        elif num_workers > physical:
            warnings.warn(
                f"num_workers={num_workers}: Dragon 0.15 Batch takes workers_per_node, at most one per physical core "
                f"({physical} here); using workers_per_node={physical}",
                UserWarning,
                stacklevel=2,
            )
            workers = physical
        else:
            workers = num_workers
        if disable_background_batching:
            warnings.warn(
                "disable_background_batching=True: Dragon 0.15 Batch has no background-batching switch (its client "
                "always groups tasks created within ~5 ms). Mapped to: each submit_tasks call creates its tasks in "
                "the caller's turn and flushes Batch's client queue before returning, instead of handing them to "
                "RHAPSODY's background submitter (which coalesces consecutive calls)",
                UserWarning,
                stacklevel=2,
            )
        self.num_workers = workers
        self.disable_telemetry = bool(disable_telemetry)
        self.disable_background_batching = bool(disable_background_batching)
        self.disable_batch_submission = bool(disable_batch_submission)
        self.batch_kwargs = {"results_ddict_mem": 64 << 20, **(batch_kwargs or {})}
        self.batch: Any = None
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._by_tuid: dict[str, _Entry] = {}
        self._canceled: set[str] = set()
        self._inbox: queue.Queue[list[_Entry] | None] = queue.Queue()
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []

    def capacity(self) -> Resources:
        # A Batch job of more ranks than one node's workers waits forever on one node.
        return Resources(ranks=self.num_workers, cores_per_rank=1)

    # ------------------------------------------------------------------ engine
    async def _start(self) -> None:
        import_dragon()
        await self._acquire_runtime()
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
                self.log.warning("batch.start_retry", attempt=attempt, error=f"{type(exc).__name__}: {exc}")
        for target, label in ((self._monitor_loop, "monitor"), (self._submit_loop, "submitter")):
            th = threading.Thread(target=target, daemon=True, name=f"rhapsody-{self.name}-{label}")
            th.start()
            self._threads.append(th)

    def _make_batch(self) -> Any:
        from dragon.workflows.batch import Batch  # noqa: PLC0415

        return Batch(disable_telem=self.disable_telemetry, workers_per_node=self.num_workers, **self.batch_kwargs)

    async def _stop(self) -> None:
        self._halt.set()
        self._inbox.put(None)
        for th in self._threads:
            await asyncio.to_thread(th.join, 10)
        if self.batch is not None:
            await asyncio.to_thread(self._close_batch)
        await self._release_runtime()

    def _close_batch(self) -> None:
        b, self.batch = self.batch, None
        try:
            b.join(timeout=30)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("batch.join_failed", error=str(exc))
            try:
                b.terminate(timeout=5.0)
            except Exception as exc2:  # noqa: BLE001
                self.log.warning("batch.terminate_failed", error=str(exc2))

    # ------------------------------------------------------------------ submit
    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        entries = []
        for task in self.startable(tasks):
            ranks = self._ranks_of(task)
            if ranks > self.num_workers:
                self.report_failure(
                    task, ResourceError(f"task {task.uid} asks for {ranks} ranks; this Batch places at most {self.num_workers} on one node")
                )
                continue
            entries.append(_Entry(task, str(self.artifact_path(task, "v3"))))
        with self._lock:
            for e in entries:
                self._entries[e.task.uid] = e
        if not entries:
            return
        if self.disable_background_batching:
            await asyncio.to_thread(self._create, entries, True)
        else:
            self._inbox.put(entries)

    @staticmethod
    def _ranks_of(task: ComputeTask) -> int:
        tmpls = task.task_backend_specific_kwargs.get("process_templates")
        if tmpls:
            return sum(int(n) for n, _ in tmpls)
        return task.resources.ranks

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

    def _create(self, entries: list[_Entry], flush: bool) -> None:
        for e in entries:
            with self._lock:
                if e.task.uid in self._canceled or self._halt.is_set():
                    self._canceled.discard(e.task.uid)
                    continue
            try:
                e.dtask = self._make_task(e)
            except Exception as exc:  # noqa: BLE001 - this task cannot be built; the rest can
                with self._lock:
                    self._entries.pop(e.task.uid, None)
                self.report_failure(e.task, BackendError(f"Dragon Batch refused task {e.task.uid}: {type(exc).__name__}: {exc}"))
                continue
            with self._lock:
                self._by_tuid[e.dtask.uid] = e
            if self.disable_batch_submission:
                self._flush()
        if flush and not self.disable_batch_submission:
            self._flush()

    def _flush(self) -> None:
        flush = getattr(self.batch, "_flush_client_request_worker", None)
        if flush is not None:  # private in 0.15; without it Batch still dispatches within ~5 ms
            flush(timeout=60)

    def _template(self, base: str, argv: list[str], cwd: str | None, env: dict[str, str], extra: dict[str, Any]) -> Any:
        from dragon.native.process import ProcessTemplate  # noqa: PLC0415

        kw: dict[str, Any] = {"cwd": cwd or os.getcwd(), "env": {**os.environ, **env}}
        for key in ("cwd", "env", "policy"):
            if extra.get(key) is not None:
                kw[key] = {**kw["env"], **extra[key]} if key == "env" else extra[key]
        return ProcessTemplate("/bin/sh", args=["-c", _WRAP, base, *argv], **kw)

    def _make_task(self, e: _Entry) -> Any:
        task = e.task
        opts = self.batch.options(name=task.uid)
        if task.is_function:
            return opts.function(_worker.v3_function_main, pack_function(task), e.base + ".started")
        argv, cwd, env = command_of(task)
        argv = resolve(argv, cwd, env)
        kw = task.task_backend_specific_kwargs
        tmpls = kw.get("process_templates")
        if tmpls:
            return opts.job([(int(n), self._template(e.base, argv, cwd, env, dict(t or {}))) for n, t in tmpls])
        tmpl = self._template(e.base, argv, cwd, env, dict(kw.get("process_template") or {}, policy=kw.get("policy")))
        if task.resources.ranks > 1:
            return opts.job([(task.resources.ranks, tmpl)])
        return opts.process(tmpl)

    # ------------------------------------------------------------------ events
    def _monitor_loop(self) -> None:
        while not self._halt.is_set():
            try:
                tuid = self.batch.poll(timeout=0.1)
            except Exception as exc:  # noqa: BLE001
                if not self._halt.is_set():
                    self.log.error("batch.poll_failed", error=f"{type(exc).__name__}: {exc}")
                    self._halt.wait(0.5)
                continue
            self._check_started()
            if tuid is None:
                continue
            with self._lock:
                e = self._by_tuid.pop(tuid, None)
                if e is not None and self._entries.pop(e.task.uid, None) is None:
                    e = None  # cancelled meanwhile
            if e is not None:
                self._finish(e)

    def _check_started(self) -> None:
        with self._lock:
            waiting = [e for e in self._entries.values() if not e.started and e.dtask is not None]
        for e in waiting:
            if os.path.exists(e.base + ".started"):
                e.started = True
                self.report_running(e.task)

    def _finish(self, e: _Entry) -> None:
        task = e.task
        try:
            value = e.dtask.get(timeout=60)
        except Exception as exc:  # noqa: BLE001 - Batch itself failed the task
            if type(exc).__name__ == "TaskCancelledError":
                self.report_canceled(task)
            else:
                self.report_failure(
                    task,
                    BackendError(f"Dragon Batch failed task {task.uid}: {type(exc).__name__}: {exc}"),
                    stderr=getattr(e.dtask, "traceback", None),
                )
            self._cleanup(e)
            return
        if task.is_function:
            self.deliver_function(task, *value)
        else:
            codes = value if isinstance(value, list) else [value]
            code = next((c for c in codes if c != 0), 0)
            out, err = self._read(e.base + ".out"), self._read(e.base + ".err")
            self.deliver_command(task, code, out, err)
        self._cleanup(e)

    @staticmethod
    def _read(path: str) -> str:
        try:
            with open(path, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    @staticmethod
    def _cleanup(e: _Entry) -> None:
        for suffix in (".started", ".out", ".err"):
            with contextlib.suppress(OSError):
                os.unlink(e.base + suffix)

    # ------------------------------------------------------------------ cancel
    async def _cancel(self, task: BaseTask) -> bool:
        with self._lock:
            e = self._entries.pop(task.uid, None)
            if e is None:
                return False
            if e.dtask is None:  # not handed to Batch yet: it never will be
                self._canceled.add(task.uid)
                return True
            self._by_tuid.pop(e.dtask.uid, None)
        try:
            ok = await asyncio.to_thread(e.dtask.cancel, 30)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("task.cancel_failed", task=task.uid, error=str(exc))
            ok = False
        if not ok:  # it ended meanwhile: deliver what it did
            await asyncio.to_thread(self._finish, e)
            return False
        self._cleanup(e)
        return True
