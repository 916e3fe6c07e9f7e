"""V1: one native Dragon `Process` per task; a multi-rank task (``Resources.ranks > 1``) is one
Dragon `ProcessGroup` (rank in ``$RHAPSODY_RANK``, ``$RHAPSODY_RANKS``).

A driver thread starts tasks (at most ``num_workers`` at once). Each started task has a
watcher thread: a single process is joined with a blocking ``Process.join`` (event
driven in Global Services, no polling); a process group is driven from its own thread
(``init / start / join / inactive_puids / close``) because ProcessGroup's client is not
thread-safe. Executables write stdout/stderr to files through Dragon's own
``stdout=<path>`` option (no shell in between, so cancel kills the real process);
function results come back on one Dragon queue, read by a reader thread.

Why a group is not joined through ``ProcessGroup.puids``: that property lists only
*running* ranks, so fast ranks have already left it when a caller asks, and a
multi-join on it never sees them exit; ``join()`` followed by ``inactive_puids``
gives every rank's exit code.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import glob
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from rhapsody.errors import BackendError
from rhapsody.resources import Resources
from rhapsody.task import BaseTask, ComputeTask
from rhapsody_dragon import _worker
from rhapsody_dragon._common import DragonBackendBase, command_of, import_dragon, missing_executable, pack_function, resolve

_RESULT_GRACE = 5.0  # seconds a function's exit may overtake its result on the queue


class _Job:
    def __init__(self, task: ComputeTask, ranks: int) -> None:
        self.task, self.ranks = task, ranks
        self.handle: _Single | _Group | None = None
        self.codes: list[int] = []
        self.results: list[tuple[Any, ...]] = []
        self.exited_at: float | None = None
        self.base = ""


class _Single:
    """A single-rank task's Dragon process and the thread that joins it."""

    def __init__(self, proc: Any, job: _Job, on_exit: Any) -> None:
        self.proc, self.job, self.on_exit = proc, job, on_exit
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"rhapsody-p-{job.task.uid}")

    def start(self) -> None:
        self.proc.start()
        self.thread.start()

    def _run(self) -> None:
        code = -1
        try:
            self.proc.join()
            code = self.proc.returncode
        except Exception:  # noqa: BLE001 - the runtime went away: the task fails below
            pass
        self.done.set()
        self.on_exit(self.job, [code if code is not None else -1])

    def kill(self) -> None:
        """Kill the process; returns once it is gone (or after 30 s)."""
        try:
            self.proc.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self.thread.is_alive():
            self.done.wait(30)


class _Group:
    """A multi-rank task as one Dragon ``ProcessGroup``, driven by its own thread
    (only that thread talks to the group)."""

    def __init__(self, pg: Any, job: _Job, on_exit: Any, log: Any) -> None:
        self.pg, self.job, self.on_exit, self.log = pg, job, on_exit, log
        self.kill_asked = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"rhapsody-pg-{job.task.uid}")

    def start(self) -> None:
        """init + start in the caller's thread (an error fails the task), then join in the group's thread."""
        self.pg.init()
        try:
            self.pg.start()
        except BaseException:
            self._close()
            raise
        self.thread.start()

    def _run(self) -> None:
        codes: list[int] = []
        try:
            while True:
                if self.kill_asked.is_set():
                    self.pg.kill(hide_stderr=True)
                    self.kill_asked.clear()
                try:
                    self.pg.join(timeout=0.2)
                    break
                except TimeoutError:
                    continue
            codes = [code for _, code in self.pg.inactive_puids]
        except Exception as exc:  # noqa: BLE001 - reported as failed ranks below
            self.log.debug("process_group.failed", task=self.job.task.uid, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._close()
            self.done.set()
        codes += [-1] * (self.job.ranks - len(codes))
        self.on_exit(self.job, codes)

    def _close(self) -> None:
        try:
            self.pg.close(patience=10.0)
        except Exception as exc:  # noqa: BLE001 - e.g. its manager was slow to exit on a loaded node
            self.log.debug("process_group.close_failed", task=self.job.task.uid, error=str(exc))

    def kill(self) -> None:
        """Kill every rank; returns once the group is down (or after 30 s)."""
        self.kill_asked.set()
        if self.thread.is_alive():
            self.done.wait(30)


class DragonExecutionBackendV1(DragonBackendBase):
    """Executables and functions, each in its own Dragon process (at most
    ``num_workers`` tasks at once, default: one per CPU); ``Resources.ranks > 1``
    runs the task as a Dragon ``ProcessGroup`` of that many processes."""

    def __init__(self, name: str = "dragon_v1", num_workers: int | None = None, max_ranks: int | None = None) -> None:
        super().__init__(name)
        n = (os.cpu_count() or 1) if num_workers is None else num_workers
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        self.num_workers = n
        self.max_ranks = max_ranks or 64
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._pending: collections.deque[_Job] = collections.deque()
        self._active: dict[str, _Job] = {}
        self._results: Any = None
        self._threads: list[threading.Thread] = []

    def capacity(self) -> Resources:
        return Resources(ranks=self.max_ranks, cores_per_rank=1, gpus_per_rank=0)

    async def _start(self) -> None:
        import_dragon()
        await self._acquire_runtime()
        from dragon.native.queue import Queue  # noqa: PLC0415

        self._results = await asyncio.to_thread(Queue, 256)
        for target, label in ((self._drive, "driver"), (self._read_results, "results")):
            th = threading.Thread(target=target, daemon=True, name=f"rhapsody-{self.name}-{label}")
            th.start()
            self._threads.append(th)

    async def _stop(self) -> None:
        self._halt.set()
        self._wake.set()
        for th in self._threads:
            await asyncio.to_thread(th.join, 30)
        if self._results is not None:
            try:
                self._results.destroy()
            except Exception:  # noqa: BLE001
                pass
        await self._release_runtime()

    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        jobs = []
        for task in tasks:
            assert isinstance(task, ComputeTask)
            if not task.is_function:
                argv, cwd, env = command_of(task)
                why = missing_executable(argv, cwd, env)
                if why is not None:
                    self.fail_missing(task, why)
                    continue
            jobs.append(_Job(task, task.resources.ranks))
        with self._lock:
            self._pending.extend(jobs)
        self._wake.set()

    async def _cancel(self, task: BaseTask) -> bool:
        return await asyncio.to_thread(self._cancel_sync, task.uid)

    def _cancel_sync(self, uid: str) -> bool:
        with self._lock:
            for job in self._pending:
                if job.task.uid == uid:
                    self._pending.remove(job)
                    return True
            job = self._active.pop(uid, None)
            if job is None:
                return False
        self._kill(job)
        self._wake.set()
        return True

    def _kill(self, job: _Job) -> None:
        if job.handle is not None:
            try:
                job.handle.kill()
            except Exception as exc:  # noqa: BLE001 - it may have ended meanwhile
                self.log.debug("task.kill_failed", task=job.task.uid, error=str(exc))
        self._cleanup_files(job)

    # ------------------------------------------------------------------ driver thread
    def _drive(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            self._finish_ready()
            self._launch_some()
        with self._lock:  # shutdown: whatever still runs is killed
            left = list(self._active.values())
            self._active.clear()
            self._pending.clear()
        for job in left:
            self._kill(job)

    def _launch_some(self) -> None:
        while not self._halt.is_set():
            with self._lock:
                if not self._pending or len(self._active) >= self.num_workers:
                    return
                job = self._pending.popleft()
                self._active[job.task.uid] = job
            try:
                self._launch(job)
            except Exception as exc:  # noqa: BLE001 - this task cannot start; the others can
                with self._lock:
                    self._active.pop(job.task.uid, None)
                self._cleanup_files(job)
                self.report_failure(job.task, BackendError(f"Dragon could not start task {job.task.uid}: {type(exc).__name__}: {exc}"))
                continue
            with self._lock:
                cancelled = job.task.uid not in self._active
            if cancelled:  # cancelled while starting
                self._kill(job)
            else:
                self.report_running(job.task)

    def _template_args(self, job: _Job, rank: int) -> dict[str, Any]:
        task = job.task
        rank_env = {"RHAPSODY_RANK": str(rank), "RHAPSODY_RANKS": str(job.ranks)}
        if task.is_function:
            return {
                "target": _worker.v1_function_main,
                "args": (pack_function(task), self._results, task.uid, rank),
                "env": {**os.environ, **rank_env} if job.ranks > 1 else None,
            }
        argv, cwd, env = command_of(task)
        argv = resolve(argv, cwd, env)
        job.base = str(self.artifact_path(task, "v1"))
        kw = task.task_backend_specific_kwargs
        out: dict[str, Any] = {
            "target": argv[0],
            "args": argv[1:],
            "cwd": cwd or os.getcwd(),
            # no env given: the process inherits the runtime's environment (cheaper to start)
            "env": {**os.environ, **env, **rank_env} if env or job.ranks > 1 else None,
            "stdout": f"{job.base}.{rank}.out",
            "stderr": f"{job.base}.{rank}.err",
        }
        if kw.get("policy") is not None:
            out["policy"] = kw["policy"]
        return out

    def _launch(self, job: _Job) -> None:
        if job.ranks == 1:
            from dragon.native.process import Process  # noqa: PLC0415

            handle: _Single | _Group = _Single(Process(**self._template_args(job, 0)), job, self._on_exit)
        else:
            from dragon.native.process import ProcessTemplate  # noqa: PLC0415
            from dragon.native.process_group import ProcessGroup  # noqa: PLC0415

            # restart=False: run once; ignore_error_on_exit=True: a failing rank does not
            # end the join early, and every rank's exit code comes back in inactive_puids.
            pg = ProcessGroup(restart=False, ignore_error_on_exit=True, name=f"rhapsody-{job.task.uid}")
            for rank in range(job.ranks):
                spec = self._template_args(job, rank)
                pg.add_process(1, ProcessTemplate(spec.pop("target"), **spec))
            handle = _Group(pg, job, self._on_exit, self.log)
        job.handle = handle
        handle.start()

    def _on_exit(self, job: _Job, codes: list[int]) -> None:
        with self._lock:
            if self._active.get(job.task.uid) is not job:
                return  # cancelled
            job.codes = list(codes)
            job.exited_at = time.monotonic()
        self._wake.set()

    # ------------------------------------------------------------------ results reader thread
    def _read_results(self) -> None:
        while not self._halt.is_set():
            try:
                uid, rank, status, data, tb = self._results.get(timeout=0.2)
            except queue.Empty:
                continue
            except Exception as exc:  # noqa: BLE001 - Dragon's own Empty / TimeoutError, or the runtime went away
                if type(exc).__name__ in ("Empty", "TimeoutError", "QueueEmpty"):
                    continue
                if not self._halt.is_set():
                    self.log.error("results.failed", error=f"{type(exc).__name__}: {exc}")
                    self._halt.wait(0.5)
                continue
            with self._lock:
                job = self._active.get(uid)
                if job is not None:
                    job.results.append((status, data, tb, rank))
                    ready = job.exited_at is not None
                else:
                    ready = False
            if ready:
                self._wake.set()

    # ------------------------------------------------------------------ completion
    def _finish_ready(self) -> None:
        done = []
        now = time.monotonic()
        with self._lock:
            for uid, job in list(self._active.items()):
                if job.exited_at is None:
                    continue
                if job.task.is_function and len(job.results) < job.ranks and now - job.exited_at < _RESULT_GRACE:
                    continue  # the exit may overtake the result in flight; the reader wakes us

                del self._active[uid]
                done.append(job)
        for job in done:
            self._finish(job)

    def _finish(self, job: _Job) -> None:
        task = job.task
        if task.is_function:
            if len(job.results) < job.ranks:
                self.report_failure(
                    task, BackendError(f"task {task.uid}: its Dragon process exited with {job.codes} before returning a result")
                )
                return
            if job.ranks == 1:
                self.deliver_function(task, *job.results[0][:3])
                return
            failed = [r for r in job.results if r[0] != "ok"]
            if failed:
                self.deliver_function(task, *failed[0][:3])
                return
            import cloudpickle  # noqa: PLC0415

            ordered = sorted(job.results, key=lambda r: r[3])
            self.report_result(task, return_value=[cloudpickle.loads(r[1]) for r in ordered])
            return
        out, err = self._read_files(job)
        code = next((c for c in job.codes if c != 0), 0)
        self.deliver_command(task, code, out, err)

    def _read_files(self, job: _Job) -> tuple[str, str]:
        texts = []
        for suffix in ("out", "err"):
            parts = []
            for rank in range(job.ranks):
                path = f"{job.base}.{rank}.{suffix}"
                try:
                    with open(path, errors="replace") as fh:
                        parts.append(fh.read())
                    os.unlink(path)
                except OSError:
                    pass
            texts.append("".join(parts))
        return texts[0], texts[1]

    def _cleanup_files(self, job: _Job) -> None:
        if job.base:
            for path in glob.glob(f"{glob.escape(job.base)}.*.*"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
