"""V1: one native Dragon `Process` per task and per rank of a multi-rank task
(rank in ``$RHAPSODY_RANK``). One driver thread starts processes (at most ``num_workers`` tasks at
once), waits for exits with Global Services' multi-join and collects function
results from one Dragon queue."""

from __future__ import annotations

import asyncio
import collections
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

# exec keeps the pid (cancel kills the real process); output goes to files named by pid
_REDIRECT = 'exec "$@" >"$0.$$.out" 2>"$0.$$.err"'


class _Ranks:
    """The processes of one multi-rank task, killed together."""

    def __init__(self, procs: list[Any]) -> None:
        self.procs = procs

    def kill(self) -> None:
        for p in self.procs:
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass


class _Job:
    def __init__(self, task: ComputeTask, ranks: int) -> None:
        self.task, self.ranks = task, ranks
        self.handle: Any = None  # _Ranks
        self.puids: set[int] = set()
        self.codes: list[int] = []
        self.results: list[tuple[Any, ...]] = []
        self.exited_at: float | None = None
        self.base = ""


class DragonExecutionBackendV1(DragonBackendBase):
    """Executables and functions, each in its own Dragon process;
    ``Resources.ranks > 1`` starts that many processes (``$RHAPSODY_RANK``)."""

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
        self._by_puid: dict[int, _Job] = {}
        self._results: Any = None
        self._driver: threading.Thread | None = None

    def capacity(self) -> Resources:
        return Resources(ranks=self.max_ranks, cores_per_rank=1, gpus_per_rank=0)

    async def _start(self) -> None:
        import_dragon()
        await self._acquire_runtime()
        from dragon.native.queue import Queue  # noqa: PLC0415

        self._results = await asyncio.to_thread(Queue, 256)
        self._driver = threading.Thread(target=self._drive, daemon=True, name=f"rhapsody-{self.name}-driver")
        self._driver.start()

    async def _stop(self) -> None:
        self._halt.set()
        self._wake.set()
        if self._driver is not None:
            await asyncio.to_thread(self._driver.join, 15)
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
            for puid in job.puids:
                self._by_puid.pop(puid, None)
        self._kill(job)
        self._wake.set()
        return True

    def _kill(self, job: _Job) -> None:
        try:
            job.handle.kill()
        except Exception as exc:  # noqa: BLE001 - it may have ended meanwhile
            self.log.debug("task.kill_failed", task=job.task.uid, error=str(exc))
        self._cleanup_files(job)

    # ------------------------------------------------------------------ the driver thread
    def _drive(self) -> None:
        from dragon.globalservices.process import multi_join  # noqa: PLC0415

        while not self._halt.is_set():
            self._launch_some()
            with self._lock:
                puids = list(self._by_puid)
            if puids:
                try:
                    exited, _ = multi_join(puids, timeout=0.02, join_all=False)
                except Exception as exc:  # noqa: BLE001
                    self.log.debug("multi_join.failed", error=str(exc))
                    exited = None
                for puid, code in exited or ():
                    self._on_exit(puid, code)
            else:
                self._wake.wait(0.05)
                self._wake.clear()
            self._drain_results()
            self._finish_ready()
        with self._lock:  # shutdown: whatever still runs is killed
            left = list(self._active.values())
            self._active.clear()
            self._by_puid.clear()
            self._pending.clear()
        for job in left:
            self._kill(job)

    def _launch_some(self) -> None:
        while True:
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
                self.report_failure(job.task, BackendError(f"Dragon could not start task {job.task.uid}: {type(exc).__name__}: {exc}"))
                continue
            with self._lock:
                if job.task.uid not in self._active:  # cancelled while starting
                    kill = True
                else:
                    kill = False
                    for puid in job.puids:
                        self._by_puid[puid] = job
            if kill:
                self._kill(job)
            else:
                self.report_running(job.task)

    def _template_args(self, job: _Job, rank: int) -> dict[str, Any]:
        task = job.task
        rank_env = {"RHAPSODY_RANK": str(rank), "RHAPSODY_RANKS": str(job.ranks)}
        if task.is_function:
            return {"target": _worker.v1_function_main, "args": (pack_function(task), self._results, task.uid, rank),
                    "env": {**os.environ, **rank_env}}
        argv, cwd, env = command_of(task)
        argv = resolve(argv, cwd, env)
        job.base = str(self.artifact_path(task, "v1"))
        kw = task.task_backend_specific_kwargs
        out: dict[str, Any] = {"target": "/bin/sh", "args": ["-c", _REDIRECT, job.base, *argv],
                               "cwd": cwd or os.getcwd(), "env": {**os.environ, **env, **rank_env}}
        if kw.get("policy") is not None:
            out["policy"] = kw["policy"]
        return out

    def _launch(self, job: _Job) -> None:
        from dragon.native.process import Process  # noqa: PLC0415

        procs = []
        for rank in range(job.ranks):
            spec = self._template_args(job, rank)
            proc = Process(**spec)
            proc.start()
            procs.append(proc)
        job.handle = _Ranks(procs)
        job.puids = {p.puid for p in procs}

    def _on_exit(self, puid: int, code: int) -> None:
        with self._lock:
            job = self._by_puid.pop(puid, None)
            if job is None:
                return
            job.codes.append(code)
            if len(job.codes) == job.ranks:
                job.exited_at = time.monotonic()

    def _drain_results(self) -> None:
        while True:
            try:
                uid, rank, status, data, tb = self._results.get(block=False)
            except queue.Empty:
                return
            except Exception:  # noqa: BLE001 - the runtime went away
                return
            with self._lock:
                job = self._active.get(uid)
                if job is not None:
                    job.results.append((status, data, tb, rank))

    def _finish_ready(self) -> None:
        done = []
        now = time.monotonic()
        with self._lock:
            for uid, job in list(self._active.items()):
                if job.exited_at is None:
                    continue
                if job.task.is_function and len(job.results) < job.ranks and now - job.exited_at < 5.0:
                    continue  # the exit may overtake the result in flight
                del self._active[uid]
                done.append(job)
        for job in done:
            self._finish(job)

    def _finish(self, job: _Job) -> None:
        task = job.task
        if task.is_function:
            if len(job.results) < job.ranks:
                self.report_failure(task, BackendError(
                    f"task {task.uid}: its Dragon process exited with {job.codes} before returning a result"))
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
            for path in sorted(glob.glob(f"{glob.escape(job.base)}.*.{suffix}")):
                with open(path, errors="replace") as fh:
                    parts.append(fh.read())
                os.unlink(path)
            texts.append("".join(parts))
        return texts[0], texts[1]

    def _cleanup_files(self, job: _Job) -> None:
        if job.base:
            for path in glob.glob(f"{glob.escape(job.base)}.*.*"):
                try:
                    os.unlink(path)
                except OSError:
                    pass
