"""V2: a persistent pool of Dragon worker processes fed through Dragon queues.

The client keeps the queue of pending tasks and hands each worker a bounded
window of them (in chunks); a worker reports ("start", uid) before and
("done", uid, result) after each task, in small batches. So RUNNING is real,
a cancel is sent to the task's worker, which answers at once (a reader thread
takes messages while a task runs) whether it skipped the task, killed the
executable it was running (its whole process session), is running it as a
function (the client then kills that worker and starts a fresh one) or already
finished it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import queue
import threading
from collections.abc import Sequence
from typing import Any

from rhapsody.backends.base import BackendState
from rhapsody.errors import BackendError
from rhapsody.resources import Resources
from rhapsody.task import BaseTask, ComputeTask
from rhapsody_dragon import _worker
from rhapsody_dragon._common import DragonBackendBase, command_of, import_dragon, missing_executable, pack_function

#: longest sleep between reads of the result queue while tasks are in flight
POLL_BUSY = 0.005
#: first sleep after activity (a round trip through a worker takes ~0.1-0.2 ms)
POLL_FIRST = 0.0002


class _Worker:
    def __init__(self, wid: int, proc: Any, inq: Any) -> None:
        self.wid, self.proc, self.inq = wid, proc, inq
        self.assigned: collections.OrderedDict[str, tuple[Any, ...]] = collections.OrderedDict()
        self.dead = False


class DragonExecutionBackendV2(DragonBackendBase):
    """Function and executable tasks on ``num_workers`` persistent Dragon
    worker processes (default: one per CPU). Single-rank tasks only."""

    def __init__(self, name: str = "dragon_v2", num_workers: int | None = None, window: int = 64, chunk: int = 16) -> None:
        super().__init__(name)
        n = (os.cpu_count() or 1) if num_workers is None else num_workers
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        self.num_workers = n
        self._window, self._chunk = max(1, window), max(1, chunk)
        self._lock = threading.RLock()
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._workers: list[_Worker] = []
        self._where: dict[str, _Worker] = {}
        self._by_uid: dict[str, BaseTask] = {}
        self._running: set[str] = set()
        self._outq: Any = None
        self._monitor: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._halt = threading.Event()
        self._kick = threading.Event()  # wakes the monitor's idle back-off
        self._next_wid = 0
        self._verdicts: dict[str, str] = {}
        self._verdict_cv = threading.Condition(self._lock)

    def capacity(self) -> Resources:
        return Resources(ranks=1, cores_per_rank=1)

    # ------------------------------------------------------------------ engine
    async def _start(self) -> None:
        import_dragon()
        await self._acquire_runtime()
        await asyncio.to_thread(self._start_pool)
        self._monitor = threading.Thread(target=self._monitor_loop, daemon=True, name=f"rhapsody-{self.name}-monitor")
        self._monitor.start()
        self._watchdog = threading.Thread(target=self._watch_workers, daemon=True, name=f"rhapsody-{self.name}-watchdog")
        self._watchdog.start()

    def _start_pool(self) -> None:
        from dragon.native.queue import Queue  # noqa: PLC0415

        self._outq = Queue(maxsize=256)
        for _ in range(self.num_workers):
            self._workers.append(self._spawn_worker())

    def _spawn_worker(self) -> _Worker:
        from dragon.native.process import Process  # noqa: PLC0415
        from dragon.native.queue import Queue  # noqa: PLC0415

        wid = self._next_wid
        self._next_wid += 1
        inq = Queue(maxsize=128)
        proc = Process(target=_worker.pool_worker, args=(inq, self._outq, wid))
        proc.start()
        return _Worker(wid, proc, inq)

    async def _stop(self) -> None:
        self._halt.set()
        if self._monitor is not None:
            self._kick.set()  # out of an idle wait; it then sees _halt
            await asyncio.to_thread(self._monitor.join, 10)
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.join, 10)
        await asyncio.to_thread(self._stop_pool)
        await self._release_runtime()

    def _stop_pool(self) -> None:
        workers, self._workers = self._workers, []
        for w in workers:
            if not w.dead:
                try:
                    w.inq.put(None, timeout=2)
                except Exception:  # noqa: BLE001
                    pass
        for w in workers:
            try:
                if w.proc.join(timeout=5) is None:
                    w.proc.kill()
                    w.proc.join(timeout=5)
            except Exception as exc:  # noqa: BLE001
                self.log.warning("worker.stop_failed", worker=w.wid, error=str(exc))
        for q in [w.inq for w in workers] + [self._outq]:
            try:
                if q is not None:
                    q.destroy()
            except Exception:  # noqa: BLE001
                pass
        self._outq = None

    # ------------------------------------------------------------------ submit
    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        specs = []
        for task in tasks:
            assert isinstance(task, ComputeTask)
            if task.is_function:
                specs.append(("f", task.uid, pack_function(task)))
                continue
            argv, cwd, env = command_of(task)
            why = missing_executable(argv, cwd, env)
            if why is not None:
                self.fail_missing(task, why)
                continue
            specs.append(("x", task.uid, argv, cwd, env))
        with self._lock:
            for task in tasks:
                self._by_uid[task.uid] = task
            self._pending.extend(specs)
            self._dispatch()
        self._kick.set()

    def _dispatch(self) -> None:
        """Top up the workers' windows, least loaded first, in fair shares (lock held)."""
        live = [w for w in self._workers if not w.dead]
        while self._pending and live:
            w = min(live, key=lambda x: len(x.assigned))
            room = self._window - len(w.assigned)
            if room <= 0:
                return
            share = max(1, min(self._chunk, room, -(-len(self._pending) // len(live))))
            chunk = []
            while self._pending and len(chunk) < share:
                spec = self._pending.popleft()
                if spec[1] not in self._by_uid:  # cancelled while pending
                    continue
                chunk.append(spec)
                w.assigned[spec[1]] = spec
                self._where[spec[1]] = w
            if chunk:
                w.inq.put(("tasks", chunk))

    # ------------------------------------------------------------------ events
    def _monitor_loop(self) -> None:
        # Non-blocking reads with short sleeps between them, not a blocking get:
        # Dragon's blocking and timed gets spin while they wait, holding the GIL
        # (which stalled the event loop thread ~6 ms after each message) and, for
        # timed gets, burning CPU (a 0.1 s timeout kept ~20% of a core busy on an
        # idle backend). While tasks are in flight the sleep starts at POLL_FIRST after
        # each message and backs off to POLL_BUSY; with none in flight nothing can
        # arrive, and it sleeps until a submit or shutdown sets `_kick`.
        delay = POLL_FIRST
        while not self._halt.is_set():
            try:
                item = self._outq.get(block=False)
            except queue.Empty:
                with self._lock:
                    in_flight = bool(self._by_uid)
                if self._kick.wait(delay if in_flight else None):
                    self._kick.clear()
                    delay = POLL_FIRST
                else:
                    delay = min(delay * 2, POLL_BUSY)
                continue
            except Exception as exc:  # noqa: BLE001 - the runtime went away
                if not self._halt.is_set():
                    self.log.error("monitor.failed", error=f"{type(exc).__name__}: {exc}")
                return
            delay = POLL_FIRST
            _, events = item
            with self._lock:
                for event in events:
                    self._on_event(event)
                self._dispatch()

    def _watch_workers(self) -> None:
        while not self._halt.wait(1.0):
            self._check_workers()

    def _on_event(self, event: tuple[Any, ...]) -> None:
        uid = event[1]
        if event[0] == "cancel":  # a worker's answer to a cancel (lock held)
            verdict = event[2]
            if verdict != "gone" and uid in self._by_uid:
                # forget it now, so its "done" (if one follows in this batch) is dropped
                self._forget(uid, self._where.get(uid))
            self._verdicts[uid] = verdict
            self._verdict_cv.notify_all()
            return
        task = self._by_uid.get(uid)
        if task is None:
            return
        if event[0] == "start":
            self._running.add(uid)
            self.report_running(task)
            return
        w = self._where.pop(uid, None)
        if w is not None:
            w.assigned.pop(uid, None)
        self._by_uid.pop(uid, None)
        self._running.discard(uid)
        result = event[2]
        if task.is_function:
            self.deliver_function(task, *result)
        else:
            self.deliver_command(task, *result)

    def _check_workers(self) -> None:
        """Replace workers that died on their own; their current task fails."""
        with self._lock:
            for i, w in enumerate(self._workers):
                if w.dead:
                    continue
                try:
                    alive = w.proc.is_alive
                except Exception:  # noqa: BLE001
                    alive = False
                if alive:
                    continue
                code = w.proc.returncode
                head = next(iter(w.assigned), None)
                if head is not None and head in self._by_uid:
                    task = self._by_uid.pop(head)
                    w.assigned.pop(head)
                    self._where.pop(head, None)
                    self.report_failure(task, BackendError(f"Dragon worker {w.wid} died (exit code {code}) while running task {head}"))
                self._replace(i, w)
                self._dispatch()

    def _replace(self, i: int, w: _Worker) -> None:
        """Put ``w``'s unfinished tasks back in front and start a new worker (lock held)."""
        w.dead = True
        self._verdict_cv.notify_all()
        back = [spec for uid, spec in w.assigned.items() if uid in self._by_uid]
        for spec in back:
            self._where.pop(spec[1], None)
        w.assigned.clear()
        self._pending.extendleft(reversed(back))
        try:
            w.inq.destroy()
        except Exception:  # noqa: BLE001
            pass
        if self._lifecycle is BackendState.RUNNING and not self._halt.is_set():
            self._workers[i] = self._spawn_worker()

    # ------------------------------------------------------------------ cancel
    async def _cancel(self, task: BaseTask) -> bool:
        return await asyncio.to_thread(self._cancel_sync, task.uid)

    def _cancel_sync(self, uid: str) -> bool:
        for _ in range(3):  # a worker replaced meanwhile moves the task: ask again
            with self._lock:
                if uid not in self._by_uid:
                    return False
                w = self._where.get(uid)
                if w is None:  # still pending here: it never reaches a worker
                    self._forget(uid, None)
                    return True
                self._verdicts.pop(uid, None)
                try:
                    w.inq.put(("cancel", uid), timeout=5)
                except Exception:  # noqa: BLE001 - the worker is gone or stuck: kill it below
                    pass
                self._verdict_cv.wait_for(lambda w=w: uid in self._verdicts or uid not in self._by_uid or w.dead, timeout=10)
                verdict = self._verdicts.pop(uid, None)
                if verdict in ("skipped", "killed"):
                    return True  # the monitor already dropped it from the books
                if verdict == "running":  # a function runs there: stop that worker, start a fresh one
                    self._kill_worker(w)
                    return True
                if uid not in self._by_uid:  # it ended meanwhile ("gone"): its result was delivered
                    return False
                if verdict == "gone":  # the worker never had it: nothing will come back
                    self._forget(uid, w)
                    return True
                if w.dead or self._where.get(uid) is not w:
                    continue
                self._forget(uid, w)  # no answer in time: the worker is stuck
                self._kill_worker(w)
                return True
        with self._lock:
            self._forget(uid, self._where.get(uid))
        return True

    def _kill_worker(self, w: _Worker) -> None:
        """Kill a worker whose current task was cancelled and start a fresh one (lock held)."""
        if w.dead:
            return
        try:
            w.proc.kill()
            w.proc.join(timeout=10)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("worker.kill_failed", worker=w.wid, error=str(exc))
        self._replace(self._workers.index(w), w)
        self._dispatch()

    def _forget(self, uid: str, w: _Worker | None) -> None:
        """Drop a cancelled task from the books (lock held); pending specs of
        unknown uids are skipped by ``_dispatch``."""
        self._by_uid.pop(uid, None)
        self._where.pop(uid, None)
        self._running.discard(uid)
        if w is not None:
            w.assigned.pop(uid, None)
