"""V2: a persistent pool of Dragon worker processes fed through Dragon queues.

The client keeps the queue of pending tasks and hands each worker a bounded
window of them (in chunks); a worker (`rhapsody_dragon.pool_worker`) reports
("start", uid) before and ("done", uid, outcome) after each task, in small
batches. So RUNNING is real, and a cancel is sent to the task's worker, which
answers at once (a watcher thread takes messages while a task runs) whether it
skipped the task, stopped the executable it was running (its whole process
group), is running it as a function (the client then kills that worker and
starts a fresh one) or already finished it.

Nobody waits inside a blocking or timed Dragon ``get`` while another thread of
the same process needs to run: those gets spin before they sleep, holding the
GIL. So the client reads its result queue with non-blocking gets (see
`PoolEngine._monitor_loop`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from rhapsody.engine import EngineContext, TaskHandle, core_count
from rhapsody.errors import BackendError
from rhapsody.execution.backend import Backend
from rhapsody.resources import Capacity
from rhapsody_dragon import functions, pool_worker
from rhapsody_dragon.node_samplers import SamplesEachNode
from rhapsody_dragon.runtime import NodeShape, OneNodeCapacity, RuntimeLease, bounded

#: longest sleep between reads of the result queue while tasks are in flight
POLL_BUSY = 0.005
#: seconds starting / stopping the worker processes may take
START_STEP_TIMEOUT, STOP_STEP_TIMEOUT = 120.0, 60.0
#: state queries of a worker that must fail in a row before it counts as dead
QUERY_FAILURES = 3
#: what the watchdog's query says of a worker besides an exit code (see PoolEngine._exit_code)
_RUNS, _UNREACHABLE = object(), object()
#: sleep between reads for POLL_EAGER_FOR s after a submit or a result: a round trip
#: through a worker takes ~0.2-0.5 ms, and a sleep doubling from there saw a lone
#: task's result up to a doubled sleep late (1.4 ms against the bare pool's 0.5)
POLL_FIRST, POLL_EAGER_FOR = 0.0001, 0.002


class _Worker:
    def __init__(self, wid: int, proc: Any, inq: Any) -> None:
        self.wid, self.proc, self.inq = wid, proc, inq
        self.assigned: collections.OrderedDict[str, tuple[Any, ...]] = collections.OrderedDict()
        self.dead = False
        self.failed_queries = 0  # state queries in a row that failed (see PoolEngine._exit_code)


def _kill_quietly(w: _Worker) -> None:
    try:
        w.proc.kill()
    except Exception:  # noqa: BLE001 - already gone, or the runtime cannot be reached
        pass


class PoolEngine(SamplesEachNode, OneNodeCapacity):
    engine_name: ClassVar[str] = "dragon-pool"
    accepted_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, num_workers: int, window: int, chunk: int) -> None:
        self.num_workers = num_workers
        self._window, self._chunk = window, chunk
        self._lock = threading.RLock()
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._workers: list[_Worker] = []
        self._where: dict[str, _Worker] = {}
        self._handles: dict[str, TaskHandle] = {}  # in flight: pending here or at a worker
        self._outq: Any = None
        self._threads: list[threading.Thread] = []
        self._halt = threading.Event()
        self._kick = threading.Event()  # wakes the monitor's idle back-off
        self._next_wid = 0
        self._verdicts: dict[str, str] = {}
        self._verdict_cv = threading.Condition(self._lock)
        self._lease = RuntimeLease(self._halt_threads)
        self._broken: str | None = None  # why no result can come back any more (see _break)
        self._name = ""

    def _capacity_on(self, node: NodeShape) -> Capacity:
        # one process per task, on one node
        return Capacity(cores=node.cores, cores_per_rank=node.cores, ranks=1, gpus=node.gpus, gpus_per_rank=node.gpus_per_node)

    # ------------------------------------------------------------------ engine
    async def start(self, context: EngineContext) -> None:
        self._log, self._name = context.log, context.name
        await self._lease.acquire()
        label = f"{self.engine_name} backend {context.name!r}"
        await self._read_node(label)
        await bounded(self._start_pool, START_STEP_TIMEOUT, label, "start step worker pool")
        for target, label in ((self._monitor_loop, "monitor"), (self._watch_workers, "watchdog")):
            th = threading.Thread(target=target, daemon=True, name=f"rhapsody-{context.name}-{label}")
            th.start()
            self._threads.append(th)

    def _start_pool(self) -> None:
        from dragon.native.queue import Queue  # noqa: PLC0415

        self._outq = Queue(maxsize=256)
        for wid in range(self.num_workers):
            self._workers.append(self._spawn_worker(wid))
        self._next_wid = self.num_workers

    def _spawn_worker(self, wid: int) -> _Worker:
        from dragon.native.process import Process  # noqa: PLC0415
        from dragon.native.queue import Queue  # noqa: PLC0415

        inq = Queue(maxsize=128)
        proc = Process(target=pool_worker.serve, args=(inq, self._outq, wid))
        proc.start()
        return _Worker(wid, proc, inq)

    def _halt_threads(self) -> None:
        self._halt.set()
        self._kick.set()  # out of an idle wait; the monitor then sees _halt

    async def stop(self) -> None:
        self._halt_threads()
        for th in self._threads:
            await asyncio.to_thread(th.join, 10)
        try:
            await self._stop_node_samplers()
            await bounded(self._stop_pool, STOP_STEP_TIMEOUT, f"{self.engine_name} backend", "stop step worker pool")
        finally:
            await self._lease.release()

    def _stop_pool(self) -> None:
        workers, self._workers = self._workers, []
        for w in workers:
            if not w.dead:
                try:
                    w.inq.put(None, timeout=2)
                except Exception:  # noqa: BLE001 - a stuck worker is killed below
                    pass
        for w in workers:
            try:
                if w.proc.join(timeout=5) is None:
                    w.proc.kill()
                    w.proc.join(timeout=5)
            except Exception as exc:  # noqa: BLE001
                self._log.warning("worker.stop_failed", worker=w.wid, error=type(exc).__name__)
        for q in [w.inq for w in workers] + [self._outq]:
            try:
                if q is not None:
                    q.destroy()
            except Exception:  # noqa: BLE001 - already gone with its worker
                pass
        self._outq = None

    # ------------------------------------------------------------------ submit
    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        specs: list[tuple[Any, ...]] = []
        accepted = []
        for handle in handles:
            if handle.launch is not None:
                specs.append(("x", handle.uid, handle.launch))
            else:
                payload = functions.pack(handle)
                if payload is None:
                    continue  # that task alone has FAILED
                specs.append(("f", handle.uid, payload))
            accepted.append(handle)
        with self._lock:
            # Checked under the lock `_break` holds: checked before it, a break
            # landing in between would empty the table and these would wait for ever.
            broken = self._broken is not None
            if not broken:
                for handle in accepted:
                    self._handles[handle.uid] = handle
                self._pending.extend(specs)
                self._dispatch()
        if broken:
            for handle in accepted:
                handle.failed(self._broken_error(handle))
            return
        self._kick.set()

    def _dispatch(self) -> None:
        """Top up the workers' windows (lock held). Pending tasks are dealt out
        one at a time, least loaded worker first, so they start in about the
        order they came (a contiguous share would queue the second task behind
        the first on one worker while the third ran on another); each worker
        gets its share of a round in one message of at most ``chunk`` tasks."""
        live = sorted((w for w in self._workers if not w.dead), key=lambda w: len(w.assigned))
        # While a worker is being replaced (out of service, still listed: see `_renew`),
        # the others get only what they can start now: a share dealt to them would wait
        # behind their current task even once the replacement is idle (tasks are not
        # taken back from a worker).
        window = self._window if len(live) == len(self._workers) else 1
        while self._pending:
            hands: dict[int, list[tuple[Any, ...]]] = {w.wid: [] for w in live}
            open_ = [w for w in live if len(w.assigned) < window]
            while self._pending and open_:
                for w in list(open_):
                    if not self._pending:
                        break
                    spec = self._pending.popleft()
                    if spec[1] not in self._handles:  # cancelled while pending
                        continue
                    hands[w.wid].append(spec)
                    w.assigned[spec[1]] = spec
                    self._where[spec[1]] = w
                    if len(w.assigned) >= window or len(hands[w.wid]) >= self._chunk:
                        open_.remove(w)
            dealt = False
            for w in live:
                if hands[w.wid]:
                    w.inq.put(("tasks", hands[w.wid]))
                    dealt = True
            if not dealt:
                return

    # ------------------------------------------------------------------ events
    def _monitor_loop(self) -> None:
        try:
            self._read_results()
        except Exception as exc:  # noqa: BLE001 - whatever stopped it, no task may wait for ever
            if not self._halt.is_set():
                self._log.error("monitor.failed", error=f"{type(exc).__name__}: {exc}")
                self._break(f"its result reader stopped: {type(exc).__name__}: {exc}")

    def _read_results(self) -> None:
        # Non-blocking reads with short sleeps between them, not a blocking get:
        # Dragon's blocking and timed gets spin while they wait, holding the GIL
        # (which stalled the event loop thread ~6 ms after each message) and, for
        # timed gets, burning CPU (a 0.1 s timeout kept ~20% of a core busy on an
        # idle backend). While tasks are in flight it sleeps POLL_FIRST between reads
        # for POLL_EAGER_FOR after a submit or a message, then backs off to POLL_BUSY;
        # with none in flight nothing can arrive, and it sleeps until a submit or
        # shutdown sets `_kick`.
        delay, active = POLL_FIRST, time.monotonic()
        while not self._halt.is_set():
            try:
                item = self._outq.get(block=False)
            except queue.Empty:
                with self._lock:
                    in_flight = bool(self._handles)
                if self._kick.wait(delay if in_flight else None):
                    self._kick.clear()
                    delay, active = POLL_FIRST, time.monotonic()
                elif time.monotonic() - active > POLL_EAGER_FOR:
                    delay = min(delay * 2, POLL_BUSY)
                continue
            delay, active = POLL_FIRST, time.monotonic()
            _, events = item
            with self._lock:
                for event in events:
                    self._on_event(event)
                self._dispatch()

    def _break(self, reason: str) -> None:
        """Nothing more can be heard from the workers: every task in flight
        fails with ``reason``, and so does every task submitted from now on."""
        with self._lock:
            self._broken = reason
            handles = list(self._handles.values())
            self._handles.clear()
            self._where.clear()
            self._pending.clear()
            for w in self._workers:
                w.assigned.clear()
        for handle in handles:
            handle.failed(self._broken_error(handle))

    def _broken_error(self, handle: TaskHandle) -> BackendError:
        return BackendError(f"task {handle.uid}: {self.engine_name} backend {self._name!r}: {self._broken}")

    def _on_event(self, event: tuple[Any, ...]) -> None:
        uid = event[1]
        if event[0] == "cancel":  # a worker's answer to a cancel (lock held)
            verdict = event[2]
            if verdict != "gone" and uid in self._handles:
                # forget it now, so its "done" (if one follows in this batch) is dropped
                self._forget(uid, self._where.get(uid))
            self._verdicts[uid] = verdict
            self._verdict_cv.notify_all()
            return
        handle = self._handles.get(uid)
        if handle is None:
            return
        if event[0] == "start":
            handle.running(event[2])
            return
        self._forget(uid, self._where.get(uid))
        if event[2]:
            functions.finish_packed(handle, event[2])
        else:  # an executable stopped before it started: nothing ran
            handle.canceled()

    def _watch_workers(self) -> None:
        while not self._halt.wait(1.0):
            try:
                self._check_workers()
            except Exception as exc:  # noqa: BLE001 - e.g. the runtime stopped under it at exit
                if self._halt.is_set():
                    return
                self._log.error("watchdog.failed", error=f"{type(exc).__name__}: {exc}")

    def _check_workers(self) -> None:
        """Replace workers that died on their own; their current task fails.
        Each check is a Global Services round trip: asked outside the lock, so
        a slow answer holds up neither results nor cancels."""
        with self._lock:
            workers = [w for w in self._workers if not w.dead]
        for w in workers:
            code = self._exit_code(w)
            if code is _RUNS:
                continue
            if code is _UNREACHABLE:  # maybe alive: it must not run on unseen
                _kill_quietly(w)
                why = f"stopped answering ({QUERY_FAILURES} state queries failed) and was killed"
            else:
                why = f"died (exit code {code})"
            with self._lock:
                if w.dead:  # a cancel took it out of service meanwhile
                    continue
                head = next(iter(w.assigned), None)
                if head is not None and head in self._handles:
                    handle = self._handles[head]
                    self._forget(head, w)
                    handle.lost(f"Dragon worker {w.wid} {why} while running it")
                self._retire(w)
            self._renew(w)

    def _exit_code(self, w: _Worker) -> object:
        """``w``'s exit code; `_RUNS` while it runs; `_UNREACHABLE` after
        `QUERY_FAILURES` failed queries in a row. A false death fails the task it
        runs, so the question is "has it exited", not Dragon's ``is_alive``, which
        is also False while a signal to it is under way (Global Services then
        shows it PENDING); and a query that fails once says nothing either."""
        try:
            code = w.proc.returncode
        except Exception as exc:  # noqa: BLE001 - Dragon raises ProcessError, timeouts, ...
            w.failed_queries += 1
            self._log.warning("worker.query_failed", worker=w.wid, times=w.failed_queries, error=f"{type(exc).__name__}: {exc}")
            return _UNREACHABLE if w.failed_queries >= QUERY_FAILURES else _RUNS
        w.failed_queries = 0
        return _RUNS if code is None else code

    def _retire(self, w: _Worker) -> None:
        """Take ``w`` out of service (lock held): nothing more is dealt to it, and
        a cancel waiting for its verdict stops waiting. `_renew` does the rest."""
        w.dead = True
        self._verdict_cv.notify_all()

    def _renew(self, w: _Worker) -> None:
        """Stop retired worker ``w``, put its unfinished tasks back in front and
        start a worker in its place. Called without the lock: the kill, the join
        and the start are Global Services round trips (0.4 s together on a quiet
        node, up to the join's 10 s on a loaded one), and meanwhile the other
        workers' results and every submit (on the event loop) need the lock.
        Its tasks go back only once it is gone, so none can run twice."""
        try:
            fresh, problem = self._replacement(w)
        except Exception as exc:  # noqa: BLE001 - the bookkeeping below must happen whatever went wrong
            fresh, problem = None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            if fresh is not None and not self._halt.is_set() and w in self._workers:
                self._workers[self._workers.index(w)] = fresh
                fresh = None
            elif problem is not None and w in self._workers:
                self._workers.remove(w)  # one worker fewer from now on
            self._dispatch()
            stranded = problem is not None and not any(not x.dead for x in self._workers)
        if stranded:  # no worker left to run anything: nothing may wait for one
            self._break(f"worker {w.wid} could not be replaced: {problem}")
        if fresh is not None:  # the backend stopped meanwhile
            _kill_quietly(fresh)
            with contextlib.suppress(Exception):
                fresh.proc.join(timeout=5)
                fresh.inq.destroy()

    def _replacement(self, w: _Worker) -> tuple[_Worker | None, str | None]:
        """Kill and join ``w``, put its unfinished tasks back in front, start a
        new worker (none once the backend is stopping). Returns it, or why not."""
        _kill_quietly(w)
        try:
            w.proc.join(timeout=10)
        except Exception as exc:  # noqa: BLE001 - gone already, or the runtime cannot be reached
            self._log.warning("worker.kill_failed", worker=w.wid, error=type(exc).__name__)
        with self._lock:
            back = [spec for uid, spec in w.assigned.items() if uid in self._handles]
            for spec in back:
                self._where.pop(spec[1], None)
            w.assigned.clear()
            self._pending.extendleft(reversed(back))
            wid, self._next_wid = self._next_wid, self._next_wid + 1
            self._dispatch()  # to the workers still in service, one each
        with contextlib.suppress(Exception):  # gone with its worker
            w.inq.destroy()
        if self._halt.is_set():
            return None, None
        try:
            return self._spawn_worker(wid), None
        except Exception as exc:  # noqa: BLE001 - e.g. the runtime is going away
            self._log.error("worker.start_failed", worker=wid, error=f"{type(exc).__name__}: {exc}")
            return None, f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ cancel
    async def cancel(self, handle: TaskHandle) -> bool:
        return await asyncio.to_thread(self._cancel_sync, handle.uid)

    def _cancel_sync(self, uid: str) -> bool:
        doomed = self._cancel_at_worker(uid)
        if isinstance(doomed, _Worker):
            self._renew(doomed)
            return True
        return doomed

    def _cancel_at_worker(self, uid: str) -> _Worker | bool:
        """Cancel ``uid``: True / False as `cancel` answers, or the worker to
        renew (its task was stopped by taking that worker out of service)."""
        for _ in range(3):  # a worker replaced meanwhile moves the task: ask again
            with self._lock:
                if uid not in self._handles:
                    return False
                w = self._where.get(uid)
                if w is None:  # still pending here: it never reaches a worker
                    self._forget(uid, None)
                    return True
                verdict = self._ask_worker(w, uid)
                if verdict in ("skipped", "killed"):
                    return True  # the monitor already dropped it from the books
                if verdict == "running":  # a function runs there: stop that worker, start a fresh one
                    return self._retired(w)
                if uid not in self._handles:  # it ended meanwhile ("gone"): its result was delivered
                    return False
                if verdict == "gone":  # the worker never had it: nothing will come back
                    self._forget(uid, w)
                    return True
                if w.dead or self._where.get(uid) is not w:
                    continue
                self._forget(uid, w)  # no answer in time: the worker is stuck
                return self._retired(w)
        with self._lock:
            self._forget(uid, self._where.get(uid))
        return True

    def _retired(self, w: _Worker) -> _Worker | bool:
        """`_retire` ``w`` for a cancel (lock held): the worker to renew, or True
        if another path took it out of service first (and renews it)."""
        if w.dead:
            return True
        self._retire(w)
        return w

    def _ask_worker(self, w: _Worker, uid: str) -> str | None:
        """Send a cancel to ``w`` and wait (lock held, released while waiting) for its verdict."""
        self._verdicts.pop(uid, None)
        try:
            w.inq.put(("cancel", uid), timeout=5)
        except Exception:  # noqa: BLE001 - the worker is gone or stuck: the caller kills it
            pass
        self._verdict_cv.wait_for(lambda: uid in self._verdicts or uid not in self._handles or w.dead, timeout=10)
        return self._verdicts.pop(uid, None)

    def _forget(self, uid: str, w: _Worker | None) -> None:
        """Drop a task from the books (lock held); pending specs of unknown uids
        are skipped by ``_dispatch``."""
        self._handles.pop(uid, None)
        self._where.pop(uid, None)
        if w is not None:
            w.assigned.pop(uid, None)


class DragonPoolExecutionBackend(Backend):
    """Function and executable tasks on ``num_workers`` persistent Dragon
    worker processes (default: one per core). Single-rank tasks only.
    ``window``: most tasks handed to one worker ahead; ``chunk``: most per message."""

    engine: PoolEngine

    def __init__(self, name: str = "dragon_v2", num_workers: int | None = None, window: int = 64, chunk: int = 16) -> None:
        workers = core_count() if num_workers is None else num_workers
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        super().__init__(PoolEngine(workers, max(1, window), max(1, chunk)), name)

    @property
    def num_workers(self) -> int:
        """How many worker processes run tasks."""
        return self.engine.num_workers


#: the name earlier releases gave this backend
DragonExecutionBackendV2 = DragonPoolExecutionBackend
