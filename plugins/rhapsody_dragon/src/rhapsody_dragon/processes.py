"""V1: one native Dragon `Process` per task; a multi-rank task (``Resources.ranks > 1``) is one
Dragon `ProcessGroup` (rank in ``$RHAPSODY_RANK``, ``$RHAPSODY_RANKS``).

``num_workers`` slot threads run the tasks, one at a time each: a slot takes the next
pending task, starts its process (or group), blocks in Global Services' join (event
driven, no polling), reads the outcome back and reports it, then takes the next task.
So a task costs no thread of its own and no hand-off between threads beyond the two
with the event loop (submit in, result out), as in a hand-written start/join loop.
A process group is driven entirely by its slot thread (``init / start / join /
inactive_puids / close``): ProcessGroup's client is not thread-safe.

An executable rank runs through `rhapsody_dragon.wrapper`: in a process group of its
own, output to files, leftovers stopped when it exits; a cancel signals its group.
A function's process writes its packed outcome to ``<uid>.v1.<rank>.result`` before it
exits; the slot reads it after the join. (An earlier version sent results over a Dragon
queue read by a thread that polled it with a timeout; each timed ``get`` busy-waits,
and that thread alone used ~13% of a core even with no task running.)

Why a group is not joined through ``ProcessGroup.puids``: that property lists only
*running* ranks, so fast ranks have already left it when a caller asks, and a
multi-join on it never sees them exit; ``join()`` followed by ``inactive_puids``
gives every rank's exit code.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from rhapsody.engine import EngineContext, TaskHandle, core_count
from rhapsody.engine.launch import RANK_ENV, RANKS_ENV
from rhapsody.engine.process import KILL_GRACE, preflight
from rhapsody.errors import BackendError
from rhapsody.execution.backend import Backend
from rhapsody.resources import Capacity
from rhapsody_dragon import functions
from rhapsody_dragon.node_samplers import SamplesEachNode
from rhapsody_dragon.runtime import NodeShape, OneNodeCapacity, RuntimeLease, bounded, engine_error
from rhapsody_dragon.wrapper import PID_PATIENCE, WrappedRanks, setsid_problem

#: seconds `stop` waits for the slot threads to let go of their tasks
SLOT_PATIENCE = 30.0


def _where(job: _Job) -> str | None:
    """``<host>/puid <puid>`` of a single-rank task's Dragon process, from what
    its start returned (no query): this host by name, another one by Dragon's
    node index. None for a multi-rank group (its ranks may be on several nodes)."""
    proc = job.proc
    if proc is None:
        return None
    from dragon.utils import host_id  # noqa: PLC0415 - Dragon is loaded once the process started

    host = socket.gethostname() if proc.h_uid == host_id() else f"dragon node {proc.node}"
    return f"{host}/puid {proc.puid}"


class _Job:
    """One task: its Dragon process or group, and whether it is asked to stop."""

    def __init__(self, handle: TaskHandle, base: str) -> None:
        self.handle, self.base = handle, base
        self.ranks = handle.task.resources.ranks
        self.wrapped = WrappedRanks(handle.launch, base) if handle.launch is not None else None
        self.proc: Any = None  # a single rank's dragon.native.process.Process
        self.group: Any = None  # a multi-rank task's ProcessGroup
        self.started = False
        self.kill_asked = threading.Event()
        self.done = threading.Event()  # its slot is finished with it (processes gone, files handled)

    def result_path(self, rank: int) -> str:
        return f"{self.base}.{rank}.result"


class DragonProcessEngine(SamplesEachNode, OneNodeCapacity):
    engine_name: ClassVar[str] = "dragon-process"
    accepted_keys: ClassVar[frozenset[str]] = frozenset({"policy"})  # a dragon Policy for the task's process (group)

    def __init__(self, num_workers: int, max_ranks: int) -> None:
        self.num_workers, self.max_ranks = num_workers, max_ranks
        self._cv = threading.Condition()
        self._halt = False
        self._pending: collections.deque[_Job] = collections.deque()
        self._active: dict[str, _Job] = {}
        self._threads: list[threading.Thread] = []
        self._lease = RuntimeLease(self._halt_slots)

    def _capacity_on(self, node: NodeShape) -> Capacity:
        # A rank gets at most one node's cores; ranks beyond the cores still start
        # (Dragon oversubscribes), up to max_ranks.
        return Capacity(cores_per_rank=node.cores, ranks=self.max_ranks, gpus=node.gpus, gpus_per_rank=node.gpus_per_node)

    async def start(self, context: EngineContext) -> None:
        self._log, self._dir = context.log, Path(context.work_dir)
        problem = setsid_problem()
        if problem is not None:
            raise BackendError(problem)
        self._dir.mkdir(parents=True, exist_ok=True)
        await self._lease.acquire()
        await bounded(self._import_engine, 120, f"{self.engine_name} backend {context.name!r}", "start step importing Dragon")
        await self._read_node(f"{self.engine_name} backend {context.name!r}")
        for i in range(self.num_workers):
            th = threading.Thread(target=self._slot, daemon=True, name=f"rhapsody-{context.name}-slot{i}")
            th.start()
            self._threads.append(th)

    @staticmethod
    def _import_engine() -> None:
        """Load Dragon's process modules once, off the event loop (the slots import them per task)."""
        import importlib  # noqa: PLC0415

        for module in ("dragon.native.process", "dragon.native.process_group"):
            importlib.import_module(module)

    def _halt_slots(self) -> None:
        with self._cv:
            self._halt = True
            self._pending.clear()
            self._cv.notify_all()

    async def stop(self) -> None:
        with self._cv:
            self._halt = True
            self._pending.clear()
            left = list(self._active.values())
            self._cv.notify_all()
        try:
            await self._stop_node_samplers()
            label = f"{self.engine_name} backend"
            kills = (
                bounded(functools.partial(self._kill, job), SLOT_PATIENCE, label, f"stop step killing {job.handle.uid}") for job in left
            )
            await asyncio.gather(*kills)  # whatever still runs is killed
            deadline = time.monotonic() + SLOT_PATIENCE
            for th in self._threads:
                await asyncio.to_thread(th.join, max(0.0, deadline - time.monotonic()))
        finally:
            await self._lease.release()

    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        jobs = []
        for handle in handles:
            handle.engine_data = job = _Job(handle, str(self._dir / f"{handle.uid}.v1"))
            jobs.append(job)
        with self._cv:
            self._pending.extend(jobs)
            self._cv.notify(len(jobs))

    async def cancel(self, handle: TaskHandle) -> bool:
        job: _Job = handle.engine_data
        with self._cv:
            if job in self._pending:
                self._pending.remove(job)
                return True
            if self._active.get(handle.uid) is not job:
                return False  # it ended (its slot delivers the outcome)
        await asyncio.to_thread(self._kill, job)
        return True

    def _kill(self, job: _Job) -> None:
        """Stop a task that started (or is starting: its slot stops it once started)."""
        job.kill_asked.set()
        if job.started:
            self._stop_started(job)

    def _stop_started(self, job: _Job) -> None:
        if job.wrapped is not None and job.wrapped.stop(job.done):
            return
        # A function, or a rank whose group is not known here: Dragon kills what it
        # started. A group is killed by its slot thread, which sees `kill_asked`.
        if job.proc is not None:
            try:
                job.proc.kill()
            except Exception as exc:  # noqa: BLE001 - it may have ended meanwhile
                self._log.debug("task.kill_failed", task=job.handle.uid, error=type(exc).__name__)

    # ------------------------------------------------------------------ slot threads
    def _slot(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._halt:
                    self._cv.wait()
                if self._halt:
                    return
                job = self._pending.popleft()
                self._active[job.handle.uid] = job
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - a slot must outlive any one task
                error = engine_error(f"task {job.handle.uid}", exc)
                self._log.error("slot.failed", task=job.handle.uid, error=str(error))
                job.handle.failed(error)
            finally:
                with self._cv:
                    self._active.pop(job.handle.uid, None)
                self._cleanup(job)
                job.done.set()

    def _run(self, job: _Job) -> None:
        handle = job.handle
        if handle.cancel_requested:
            return
        if handle.launch is not None:
            failure = preflight(handle.launch)
            if failure is not None:
                handle.finish(failure)
                return
        try:
            if not self._launch(job):
                return
        except Exception as exc:  # noqa: BLE001 - this task cannot start; the others can
            error = engine_error(f"Dragon could not start task {handle.uid}", exc, handle.launch.env if handle.launch else None)
            self._log.warning("task.start_failed", task=handle.uid, error=str(error))
            handle.failed(error)
            return
        job.started = True
        if job.kill_asked.is_set():  # cancelled while starting (the canceller may not have seen it started)
            self._stop_started(job)
        else:
            handle.running(_where(job))
        codes = self._join_group(job) if job.group is not None else [self._join_single(job)]
        codes += [-1] * (job.ranks - len(codes))
        self._finish(job, codes)

    def _template_args(self, job: _Job, rank: int, payload: bytes | None) -> dict[str, Any]:
        if job.wrapped is None:
            env = {**os.environ, RANK_ENV: str(rank), RANKS_ENV: str(job.ranks)} if job.ranks > 1 else None
            return {"target": functions.process_main, "args": (payload, job.result_path(rank)), "env": env}
        from dragon.native.process import Process  # noqa: PLC0415

        spec = job.handle.launch
        assert spec is not None
        target, args = job.wrapped.command(rank)
        out: dict[str, Any] = {
            "target": target,
            "args": args,
            "cwd": spec.cwd or os.getcwd(),
            # None: the process inherits the runtime's environment (cheaper to start)
            "env": spec.environ(rank),
            # the wrapper writes the program's output; nothing for Dragon to forward
            "stdout": Process.DEVNULL,
            "stderr": Process.DEVNULL,
        }
        policy = job.handle.task.task_backend_specific_kwargs.get("policy")
        if policy is not None:
            out["policy"] = policy
        return out

    def _launch(self, job: _Job) -> bool:
        """Start the task's process (group); False if it cannot even be packed
        (then it has FAILED already)."""
        payload = None
        if job.wrapped is None:
            payload = functions.pack(job.handle)
            if payload is None:
                return False
        if job.ranks == 1:
            from dragon.native.process import Process  # noqa: PLC0415

            kw = self._template_args(job, 0, payload)
            job.proc = Process(kw.pop("target"), **kw)
            job.proc.start()
            return True
        from dragon.native.process import ProcessTemplate  # noqa: PLC0415
        from dragon.native.process_group import ProcessGroup  # noqa: PLC0415

        # restart=False: run once; ignore_error_on_exit=True: a failing rank does not
        # end the join early, and every rank's exit code comes back in inactive_puids.
        pg = ProcessGroup(restart=False, ignore_error_on_exit=True, name=f"rhapsody-{job.handle.uid}")
        for rank in range(job.ranks):
            kw = self._template_args(job, rank, payload)
            pg.add_process(1, ProcessTemplate(kw.pop("target"), **kw))
        pg.init()
        try:
            pg.start()
        except BaseException:
            self._close_group(job, pg)
            raise
        job.group = pg
        return True

    def _join_single(self, job: _Job) -> int:
        try:
            code = job.proc.join()  # Global Services answers with the exit code: no second query
        except Exception as exc:  # noqa: BLE001 - the runtime went away: the task fails below
            self._log.debug("process.join_failed", task=job.handle.uid, error=type(exc).__name__)
            return -1
        return -1 if code is None else code

    def _join_group(self, job: _Job) -> list[int]:
        pg, dragon_killed, asked_at = job.group, False, 0.0
        # Wrapped ranks end when the canceller signals their groups; Dragon's own
        # kill (it reaches the wrappers only) is the fallback when that did not work.
        patience = 0.0 if job.wrapped is None else PID_PATIENCE + KILL_GRACE
        try:
            while True:
                if job.kill_asked.is_set() and not dragon_killed:
                    asked_at = asked_at or time.monotonic()
                    if time.monotonic() - asked_at >= patience:
                        pg.kill(hide_stderr=True)
                        dragon_killed = True
                try:
                    pg.join(timeout=0.2)
                    break
                except TimeoutError:
                    continue
            return [code for _, code in pg.inactive_puids]
        except Exception as exc:  # noqa: BLE001 - reported as failed ranks
            self._log.debug("process_group.failed", task=job.handle.uid, error=type(exc).__name__)
            return []
        finally:
            self._close_group(job, pg)

    def _close_group(self, job: _Job, pg: Any) -> None:
        try:
            pg.close(patience=10.0)
        except Exception as exc:  # noqa: BLE001 - e.g. its manager was slow to exit on a loaded node
            self._log.debug("process_group.close_failed", task=job.handle.uid, error=type(exc).__name__)

    # ------------------------------------------------------------------ completion
    def _finish(self, job: _Job, codes: list[int]) -> None:
        handle = job.handle
        if job.wrapped is not None:
            handle.finish(job.wrapped.outcome(codes))
            return
        functions.finish_ranks(handle, [job.result_path(rank) for rank in range(job.ranks)], codes)

    def _cleanup(self, job: _Job) -> None:
        if job.wrapped is not None:
            job.wrapped.cleanup()
            return
        for rank in range(job.ranks):
            for path in (job.result_path(rank), f"{job.result_path(rank)}.tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(path)


class DragonProcessExecutionBackend(Backend):
    """Executables and functions, each in its own Dragon process (at most
    ``num_workers`` tasks at once, default: one per core); ``Resources.ranks > 1``
    runs the task as a Dragon ``ProcessGroup`` of that many processes (at most
    ``max_ranks``, default 64)."""

    engine: DragonProcessEngine

    def __init__(self, name: str = "dragon_v1", num_workers: int | None = None, max_ranks: int | None = None) -> None:
        workers = core_count() if num_workers is None else num_workers
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        if max_ranks is not None and (not isinstance(max_ranks, int) or isinstance(max_ranks, bool) or max_ranks < 1):
            raise ValueError(f"max_ranks must be a positive int, got {max_ranks!r}")
        super().__init__(DragonProcessEngine(workers, max_ranks or 64), name)

    @property
    def num_workers(self) -> int:
        """How many tasks run at once."""
        return self.engine.num_workers


#: the name earlier releases gave this backend
DragonExecutionBackendV1 = DragonProcessExecutionBackend
