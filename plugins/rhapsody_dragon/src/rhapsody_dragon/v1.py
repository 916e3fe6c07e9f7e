"""V1: one native Dragon `Process` per task; a multi-rank task (``Resources.ranks > 1``) is one
Dragon `ProcessGroup` (rank in ``$RHAPSODY_RANK``, ``$RHAPSODY_RANKS``).

``num_workers`` slot threads run the tasks, one at a time each: a slot takes the next
pending task, starts its process (or group), blocks in Global Services' join (event
driven, no polling), reads the outcome back and reports it, then takes the next task.
So a task costs no thread of its own and no hand-off between threads beyond the two
with the event loop (submit in, result out), as in a hand-written start/join loop.
A process group is driven entirely by its slot thread (``init / start / join /
inactive_puids / close``): ProcessGroup's client is not thread-safe.

Executables write stdout/stderr to files through Dragon's own ``stdout=<path>`` option
(no shell in between, so cancel kills the real process). A function's process writes its
pickled result to ``<uid>.v1.<rank>.result`` before it exits; the slot reads it after
the join. (An earlier version sent results over a Dragon queue read by a thread that
polled it with a timeout; each timed ``get`` busy-waits, and that thread alone used
~13% of a core even with no task running.)

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
import threading
from collections.abc import Sequence
from typing import Any

from rhapsody.errors import BackendError
from rhapsody.resources import Resources
from rhapsody.task import BaseTask, ComputeTask
from rhapsody_dragon import _worker
from rhapsody_dragon._common import DragonBackendBase, command_of, import_dragon, pack_function, resolve


class _Job:
    """One task: its Dragon process or group, and who is asked to stop it."""

    def __init__(self, task: ComputeTask, ranks: int, base: str) -> None:
        self.task, self.ranks, self.base = task, ranks, base
        self.proc: Any = None  # a single rank's dragon.native.process.Process
        self.group: Any = None  # a multi-rank task's ProcessGroup
        self.started = False
        self.kill_asked = threading.Event()
        self.done = threading.Event()  # its slot is finished with it (process gone, files handled)

    def path(self, rank: int, suffix: str) -> str:
        return f"{self.base}.{rank}.{suffix}"


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
        self._cv = threading.Condition()
        self._halt = False
        self._pending: collections.deque[_Job] = collections.deque()
        self._active: dict[str, _Job] = {}
        self._threads: list[threading.Thread] = []

    def capacity(self) -> Resources:
        return Resources(ranks=self.max_ranks, cores_per_rank=1, gpus_per_rank=0)

    async def _start(self) -> None:
        import_dragon()
        await self._acquire_runtime()
        await asyncio.to_thread(self._import_engine)
        for i in range(self.num_workers):
            th = threading.Thread(target=self._slot, daemon=True, name=f"rhapsody-{self.name}-slot{i}")
            th.start()
            self._threads.append(th)

    @staticmethod
    def _import_engine() -> None:
        """Load Dragon's process modules once, off the event loop (the slots import them per task)."""
        import importlib  # noqa: PLC0415

        for module in ("dragon.native.process", "dragon.native.process_group"):
            importlib.import_module(module)

    async def _stop(self) -> None:
        with self._cv:
            self._halt = True
            self._pending.clear()
            left = list(self._active.values())
            self._active.clear()
            self._cv.notify_all()
        for job in left:  # whatever still runs is killed
            await asyncio.to_thread(self._kill, job)
        for th in self._threads:
            await asyncio.to_thread(th.join, 30)
        await self._release_runtime()

    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        jobs = [_Job(task, task.resources.ranks, str(self.artifact_path(task, "v1"))) for task in self.startable(tasks)]
        if jobs:
            with self._cv:
                self._pending.extend(jobs)
                self._cv.notify(len(jobs))

    async def _cancel(self, task: BaseTask) -> bool:
        with self._cv:
            for job in self._pending:
                if job.task.uid == task.uid:
                    self._pending.remove(job)
                    return True
            job = self._active.pop(task.uid, None)
        if job is None:
            return False  # it ended (its slot delivers the outcome) or never reached us
        await asyncio.to_thread(self._kill, job)
        return True

    def _kill(self, job: _Job) -> None:
        """Stop a started (or starting) task; returns once its slot is done with it (or after 30 s).
        A single process is killed from here; a group by its slot thread, which sees ``kill_asked``."""
        job.kill_asked.set()
        if job.started and job.proc is not None:
            try:
                job.proc.kill()
            except Exception as exc:  # noqa: BLE001 - it may have ended meanwhile
                self.log.debug("task.kill_failed", task=job.task.uid, error=str(exc))
        job.done.wait(30)

    # ------------------------------------------------------------------ slot threads
    def _slot(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._halt:
                    self._cv.wait()
                if self._halt:
                    return
                job = self._pending.popleft()
                self._active[job.task.uid] = job
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - a slot must outlive any one task
                self.log.error("slot.failed", task=job.task.uid, error=f"{type(exc).__name__}: {exc}")
                with self._cv:
                    mine = self._active.pop(job.task.uid, None) is job
                self._cleanup_files(job)
                job.done.set()
                if mine:
                    self.report_failure(job.task, BackendError(f"task {job.task.uid}: {type(exc).__name__}: {exc}"))

    def _run(self, job: _Job) -> None:
        try:
            self._launch(job)
        except Exception as exc:  # noqa: BLE001 - this task cannot start; the others can
            with self._cv:
                mine = self._active.pop(job.task.uid, None) is job
            self._cleanup_files(job)
            job.done.set()
            if mine:
                self.report_failure(job.task, BackendError(f"Dragon could not start task {job.task.uid}: {type(exc).__name__}: {exc}"))
            return
        job.started = True
        if job.kill_asked.is_set():  # cancelled while starting (the canceller may not have seen it started)
            self._kill_started(job)
        else:
            self.report_running(job.task)
        codes = self._join_group(job) if job.group is not None else [self._join_single(job)]
        codes += [-1] * (job.ranks - len(codes))
        with self._cv:
            mine = self._active.pop(job.task.uid, None) is job
        try:
            if mine:
                self._finish(job, codes)
        finally:
            self._cleanup_files(job)
            job.done.set()

    def _kill_started(self, job: _Job) -> None:
        if job.proc is not None:
            with contextlib.suppress(Exception):
                job.proc.kill()

    def _template_args(self, job: _Job, rank: int) -> dict[str, Any]:
        task = job.task
        rank_env = {"RHAPSODY_RANK": str(rank), "RHAPSODY_RANKS": str(job.ranks)}
        if task.is_function:
            return {
                "target": _worker.v1_function_main,
                "args": (pack_function(task), job.path(rank, "result")),
                "env": {**os.environ, **rank_env} if job.ranks > 1 else None,
            }
        argv, cwd, env = command_of(task)
        argv = resolve(argv, cwd, env)
        kw = task.task_backend_specific_kwargs
        out: dict[str, Any] = {
            "target": argv[0],
            "args": argv[1:],
            "cwd": cwd or os.getcwd(),
            # no env given: the process inherits the runtime's environment (cheaper to start)
            "env": {**os.environ, **env, **rank_env} if env or job.ranks > 1 else None,
            "stdout": job.path(rank, "out"),
            "stderr": job.path(rank, "err"),
        }
        if kw.get("policy") is not None:
            out["policy"] = kw["policy"]
        return out

    def _launch(self, job: _Job) -> None:
        if job.ranks == 1:
            from dragon.native.process import Process  # noqa: PLC0415

            job.proc = Process(**self._template_args(job, 0))
            job.proc.start()
            return
        from dragon.native.process import ProcessTemplate  # noqa: PLC0415
        from dragon.native.process_group import ProcessGroup  # noqa: PLC0415

        # restart=False: run once; ignore_error_on_exit=True: a failing rank does not
        # end the join early, and every rank's exit code comes back in inactive_puids.
        pg = ProcessGroup(restart=False, ignore_error_on_exit=True, name=f"rhapsody-{job.task.uid}")
        for rank in range(job.ranks):
            spec = self._template_args(job, rank)
            pg.add_process(1, ProcessTemplate(spec.pop("target"), **spec))
        pg.init()
        try:
            pg.start()
        except BaseException:
            self._close_group(job, pg)
            raise
        job.group = pg

    def _join_single(self, job: _Job) -> int:
        try:
            code = job.proc.join()  # Global Services answers with the exit code: no second query
        except Exception as exc:  # noqa: BLE001 - the runtime went away: the task fails below
            self.log.debug("process.join_failed", task=job.task.uid, error=f"{type(exc).__name__}: {exc}")
            return -1
        return -1 if code is None else code

    def _join_group(self, job: _Job) -> list[int]:
        pg, killed = job.group, False
        try:
            while True:
                if job.kill_asked.is_set() and not killed:
                    pg.kill(hide_stderr=True)
                    killed = True
                try:
                    pg.join(timeout=0.2)
                    break
                except TimeoutError:
                    continue
            return [code for _, code in pg.inactive_puids]
        except Exception as exc:  # noqa: BLE001 - reported as failed ranks
            self.log.debug("process_group.failed", task=job.task.uid, error=f"{type(exc).__name__}: {exc}")
            return []
        finally:
            self._close_group(job, pg)

    def _close_group(self, job: _Job, pg: Any) -> None:
        try:
            pg.close(patience=10.0)
        except Exception as exc:  # noqa: BLE001 - e.g. its manager was slow to exit on a loaded node
            self.log.debug("process_group.close_failed", task=job.task.uid, error=str(exc))

    # ------------------------------------------------------------------ completion
    def _finish(self, job: _Job, codes: list[int]) -> None:
        task = job.task
        if task.is_function:
            results = [_worker.read_result(job.path(rank, "result")) for rank in range(job.ranks)]
            if any(r is None for r in results):
                self.report_failure(
                    task, BackendError(f"task {task.uid}: its Dragon process exited with {codes} before returning a result")
                )
                return
            if job.ranks == 1:
                self.deliver_function(task, *results[0])
                return
            failed = [r for r in results if r[0] != "ok"]
            if failed:
                self.deliver_function(task, *failed[0])
                return
            import cloudpickle  # noqa: PLC0415

            self.report_result(task, return_value=[cloudpickle.loads(r[1]) for r in results])
            return
        out, err = self._read_files(job)
        code = next((c for c in codes if c != 0), 0)
        self.deliver_command(task, code, out, err)

    def _read_files(self, job: _Job) -> tuple[str, str]:
        texts = []
        for suffix in ("out", "err"):
            parts = []
            for rank in range(job.ranks):
                try:
                    with open(job.path(rank, suffix), errors="replace") as fh:
                        parts.append(fh.read())
                except OSError:
                    pass
            texts.append("".join(parts))
        return texts[0], texts[1]

    def _cleanup_files(self, job: _Job) -> None:
        if job.ranks == 1:
            for suffix in ("out", "err", "result", "result.tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(job.path(0, suffix))
            return
        for path in glob.glob(f"{glob.escape(job.base)}.*.*"):
            with contextlib.suppress(OSError):
                os.unlink(path)
