"""RHAPSODY task model -> a ``concurrent.futures`` pool and local processes.

The only scheduling here is what a bare pool lacks: a count of free cores, so
the backend never runs more cores' worth of tasks at once than it has. Tasks
start in submission order (a large task at the head waits for room rather than
being overtaken forever).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, cast

from rhapsody.engine import CallControl, EngineContext, Outcome, TaskHandle, call_function, call_packed, pack_call
from rhapsody.engine.calls import is_async
from rhapsody.engine.host import gpu_count
from rhapsody.engine.process import KILL_GRACE, Command
from rhapsody.engine.sampling import LocalNodeSampler
from rhapsody.errors import BackendError, ResourceError
from rhapsody.resources import Capacity, NodeSample
from rhapsody_concurrent.cores import CoreQueue
from rhapsody_concurrent.pools import replacement_pool
from rhapsody_concurrent.threads import DaemonThreadPool

#: this node's name: where every task of this engine runs (``task.worker`` starts with it)
HOST = socket.gethostname()
#: seconds a pool job whose queue ran dry waits for another function before it ends
LINGER = 0.002
#: seconds between looks at thread functions waiting while no pool job takes any: when
#: none was taken since the last look and every job is inside a function, more start (`_look`)
WATCH = 0.001
#: a late look still judges when nothing was taken for this long: twice the interpreter's
#: switch interval, so a job that only waited for the GIL has had it at least once
STUCK = 0.01
#: a handle's engine_data while a pool thread runs its sync function (one marker for all:
#: such a call cannot be stopped, so it needs no CallControl of its own)
IN_THREAD = "in a pool thread"


class ConcurrentEngine:
    engine_name = "concurrent"

    def __init__(self, executor: Executor | None, cores: int) -> None:
        self.executor = executor
        self._owns_executor = executor is None
        self.cores = cores
        self.gpus = gpu_count()  # once: nvidia-smi is not cheap, and a node's GPUs do not change
        self._capacity = Capacity.node(cores, gpus=self.gpus)  # asked once per submission: built once
        self._queue = CoreQueue(cores)
        self._drainers = 0  # pool jobs running thread functions (see _drain); guarded by the queue's lock
        self._busy = 0  # of those, the ones inside a function now (the others are about to look at the queue); same lock
        self._taken = 0  # thread functions pool jobs took so far; same lock
        self._taken_at_look = 0  # ... at the last `_look`
        self._look_timer: asyncio.TimerHandle | None = None
        self._look_due = 0.0  # loop time the next look is due at
        self._quiet_since = 0.0  # loop time since which no look saw a function taken
        # One pool job may wait up to LINGER s for more work when the queue runs dry:
        # the next one-at-a-time task is then handed over by releasing the lock it
        # waits on (its own, held) instead of a new pool job and a thread wake-up.
        self._lingering: Any = None  # that lock, while a job waits on it; same lock
        self._suspects: deque[TaskHandle] = deque()  # ran in a process pool that broke: rerun alone
        self._in_pool = 0
        self._runners: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._threads = True  # whether pool threads run functions themselves (not a process pool); set at start
        self._sampler: LocalNodeSampler | None = None

    def capacity(self) -> Capacity:
        return self._capacity

    async def sample_resources(self) -> list[NodeSample]:
        """This host, where the pool's tasks run (telemetry polls this)."""
        if self._sampler is None:
            self._sampler = LocalNodeSampler()
        return self._sampler.sample()

    async def start(self, context: EngineContext) -> None:
        self._context = context
        self._loop = asyncio.get_running_loop()
        if self.executor is None:
            self.executor = DaemonThreadPool(self.cores, name=f"rhapsody-{context.name}")
        self._threads = not self._pickles  # asked per task; a broken process pool is replaced by another

    @property
    def _pickles(self) -> bool:
        return isinstance(self.executor, ProcessPoolExecutor)

    def _in_thread(self, handle: TaskHandle) -> bool:
        """Whether a pool thread runs this task itself (a function on a thread pool)."""
        return handle.launch is None and self._threads

    # ---------------------------------------------------------------- dispatch
    def tasks_coming(self, count: int) -> None:
        """A pool job waiting for work starts waking now; it takes the tasks
        from the queue once `submit` has put them there (it cannot run before
        the loop lets go of the GIL, which the bookkeeping in between keeps)."""
        if self._lingering is not None:
            with self._queue.lock:
                self._wake_lingering_locked()

    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        for handle in handles:
            if handle.launch is None and handle.task.resources.ranks > 1:
                handles = self._refuse_multi_rank(handles)
                break
        self._queue.put(handles)
        self._dispatch()

    def _refuse_multi_rank(self, handles: Sequence[TaskHandle]) -> list[TaskHandle]:
        """Fail the multi-rank functions (ResourceError, not BackendError: a retry
        would fail the same way); the others go on."""
        kept = []
        for handle in handles:
            if handle.launch is None and handle.task.resources.ranks > 1:
                handle.failed(
                    ResourceError(f"{self._context.name}: multi-rank function tasks need an MPI-capable backend (dragon, radical_pilot)")
                )
            else:
                kept.append(handle)
        return kept

    def _dispatch(self) -> None:
        """On the loop: start what fits; thread functions are left to pool jobs
        (`_drain`), started here only as many as there is work for."""
        if self._suspects:  # a broken pool is being diagnosed: one suspect at a time, alone
            if self._in_pool == 0:
                self._start_function(self._suspects.popleft())
            return
        queue, spawn, watch = self._queue, False, False
        while True:
            with queue.lock:
                head = queue.head_fits_locked()
                if head is None:
                    break
                if self._in_thread(head):
                    # One pool job takes thread functions one after another (`_drain`);
                    # more start only when those there stay inside their functions
                    # (`_look`): jobs taking short functions side by side would spend
                    # their time handing the GIL to each other.
                    spawn = self._drainers == 0
                    if spawn:
                        self._drainers = 1
                    else:
                        self._wake_lingering_locked()
                    # no watch while the jobs not inside a function (each about to look at
                    # the queue) are enough for what waits: each takes one
                    watch = self._look_timer is None and len(queue.waiting) > self._drainers - self._busy
                    break
                queue.take_locked()
            self._start_on_loop(head)
        if spawn:
            self._spawn_drainer()
        if watch:
            self._quiet_since = self._loop.time()
            self._look_later()

    def _look_later(self) -> None:
        self._taken_at_look = self._taken
        self._look_timer = self._loop.call_later(WATCH, self._look)
        self._look_due = self._look_timer.when()

    def _look(self) -> None:
        """On the loop, every `WATCH` s while a thread function that fits waits:
        when the pool jobs took none since the last look and all of them are
        inside a function (blocked, sleeping, computing: what a thread pool is
        for), as many more start as there are (up to ``cores`` in all, and at
        most as many as the waiting tasks): 1, 2, 4, ... while they stay stuck."""
        self._look_timer = None
        if self._stopping:
            return
        # A look that comes late found the loop busy, holding the GIL the jobs
        # need to take anything: it judges only once they had it for certain.
        now = self._loop.time()
        if self._taken != self._taken_at_look:
            self._quiet_since = now
        judge = now - self._look_due < WATCH or now - self._quiet_since >= STUCK
        with self._queue.lock:
            head = self._queue.head_fits_locked()
            waits = head is not None and self._in_thread(head)
            more = 0
            if judge and waits and self._taken == self._taken_at_look and self._busy == self._drainers < self.cores:
                more = min(self._drainers, self.cores - self._drainers, len(self._queue.waiting))
                self._drainers += more
        for _ in range(more):
            self._spawn_drainer()
        if waits:
            self._look_later()

    def _start_on_loop(self, handle: TaskHandle) -> None:
        if handle.launch is not None:
            runner = self._loop.create_task(self._run_command(handle))
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        else:
            self._start_function(handle)

    def _release(self, handle: TaskHandle) -> None:
        self._queue.release(handle.task.resources.cores)
        self._dispatch()

    # ---------------------------------------------------------------- functions on threads
    def _spawn_drainer(self) -> None:
        assert self.executor is not None
        try:
            self.executor.submit(self._drain)
        except Exception as exc:  # noqa: BLE001 - the pool is shut down: the functions waiting for it say so
            with self._queue.lock:
                self._drainers -= 1
                stranded = [h for h in self._queue.waiting if self._in_thread(h)]
                for handle in stranded:
                    self._queue.waiting.remove(handle)
            for handle in stranded:
                handle.failed(BackendError(f"{self._context.name}: the executor refused the task: {type(exc).__name__}: {exc}"))

    def _wake_lingering_locked(self) -> None:
        nudge = self._lingering
        if nudge is not None:
            self._lingering = None
            nudge.release()

    def _linger(self, nudge: Any) -> bool:
        """In a pool job whose queue ran dry (called holding no lock): wait a
        moment for more work. True: look at the queue again; False: end the job."""
        if nudge.acquire(timeout=LINGER):
            return True  # woken: `_wake_lingering_locked` cleared `_lingering`
        with self._queue.lock:
            if self._lingering is nudge:  # nobody woke it: the job ends
                self._lingering = None
                self._drainers -= 1
                return False
        return True

    def _drain(self) -> None:
        """A pool job: run thread functions from the queue until none fits. Other
        tasks met at the head are handed to the loop to start."""
        queue, released = self._queue, 0
        worker = f"{HOST}/{threading.current_thread().name}"  # this job's thread, for every task it runs
        quiet = False  # the last function's end was reported without waking the loop
        control: CallControl | None = None
        while True:
            to_loop: list[TaskHandle] = []
            with queue.lock:
                if released:
                    queue.free += released
                    self._busy -= 1
                    released = 0
                handle = queue.head_fits_locked()
                while handle is not None and not self._in_thread(handle):
                    to_loop.append(queue.take_locked())
                    handle = queue.head_fits_locked()
                linger = handle is None and self._lingering is None and not self._stopping and not to_loop
                if linger:
                    self._lingering = nudge = threading.Lock()
                    nudge.acquire()
                elif handle is None or self._stopping:
                    self._drainers -= 1
                else:
                    queue.take_locked()
                    self._busy += 1
                    self._taken += 1
                    # only an async def call can be stopped once running: a sync one is just marked
                    control = CallControl() if is_async(cast(Any, handle.task).function) else None
                    handle.engine_data = control or IN_THREAD
            if quiet and (handle is None or self._stopping):
                self._context.call_soon(self._dispatch)  # that guess failed: the loop wakes now
                quiet = False
            for other in to_loop:
                self._context.call_soon(self._start_on_loop, other)
            if linger:
                if self._linger(nudge):
                    continue
                return
            if handle is None or self._stopping:
                return
            released = handle.task.resources.cores
            if handle.cancel_requested:  # cancelled while waiting: already reported (a quiet guess stands)
                continue
            quiet = False  # the guess held: this job goes on to its next function
            handle.running(worker)  # only now: the timeout counts from the real start
            task: Any = handle.task
            outcome = call_function(task.function, task.args, task.kwargs, control)
            # Reported at once, before this job's bookkeeping, so that the loop's wake-up
            # overlaps it. A job with more functions waiting guesses it goes on to the next
            # one and reports quietly (the loop hears of it with the next report, or a tick);
            # should it find none after all, it wakes the loop itself (above).
            quiet = bool(queue.waiting) and not self._stopping
            handle.finish(outcome, more=quiet)
            del task, outcome  # a job waiting for more work keeps no ended task (nor its result) alive

    # ---------------------------------------------------------------- functions in processes
    def _start_function(self, handle: TaskHandle) -> None:
        task: Any = handle.task
        assert self.executor is not None
        try:
            future: Future[bytes] = self.executor.submit(call_packed, pack_call(task.function, task.args, task.kwargs, task.uid))
        except Exception as exc:  # noqa: BLE001 - unpicklable call, pool shut down: this task says so
            self._release(handle)
            handle.failed(exc)
            return
        self._in_pool += 1
        handle.running(f"{HOST}/process pool")  # which pool process takes it is not known here
        handle.engine_data = (future, None) if handle.engine_data is None else (future, handle.engine_data[1])
        future.add_done_callback(lambda f: self._context.call_soon(self._pool_call_ended, handle, f))

    def _pool_call_ended(self, handle: TaskHandle, future: Future[bytes]) -> None:
        self._in_pool -= 1
        self._queue.release(handle.task.resources.cores)
        if future.cancelled():
            self._dispatch()
            return
        error = future.exception()
        if isinstance(error, BrokenProcessPool):
            self._pool_broke(handle)
        elif error is not None:
            handle.failed(error)
        else:
            handle.finish(Outcome.unpack(future.result()))
        self._dispatch()

    def _pool_broke(self, handle: TaskHandle) -> None:
        """A worker of the process pool died and took the pool with it. Which of
        the tasks then running killed it is unknown, so each is run again alone
        in a fresh pool: the one that kills that pool too FAILS; the others run."""
        if self.executor is not None and getattr(self.executor, "_broken", False):
            self.executor = replacement_pool(cast(ProcessPoolExecutor, self.executor))
            self._owns_executor = True
            self._context.log.warning("process_pool.replaced", task=handle.uid)
        was_alone = handle.engine_data is not None and handle.engine_data[1] == "alone"
        if was_alone or handle.cancel_requested:
            handle.lost("the worker process running it died (killed, crashed or exited); the pool was replaced")
            return
        handle.engine_data = (None, "alone")
        with self._queue.lock:
            self._queue.free -= handle.task.resources.cores
        self._suspects.append(handle)

    # ---------------------------------------------------------------- executables
    async def _run_command(self, handle: TaskHandle) -> None:
        assert handle.launch is not None
        command = Command(handle.launch)
        handle.engine_data = command
        try:
            failure = command.start()
            if failure is not None:
                handle.finish(failure)
                return
            handle.running(f"{HOST}/pid {command.procs[0].pid}")
            handle.finish(await command.wait_async())
        except Exception as exc:  # noqa: BLE001 - whatever broke, this task says so
            command.stop()
            handle.failed(exc)
        finally:
            self._release(handle)

    # ---------------------------------------------------------------- cancel, stop
    async def cancel(self, handle: TaskHandle) -> bool:
        if self._queue.remove(handle):
            return True
        if handle in self._suspects:
            self._suspects.remove(handle)
            self._release(handle)
            return True
        data = handle.engine_data
        if isinstance(data, Command):
            data.stop(KILL_GRACE)
            return True
        if data is IN_THREAD or isinstance(data, CallControl):
            # A running sync function cannot be interrupted: it is reported
            # CANCELED now, its late result is dropped, and its cores stay
            # counted as busy until the call really returns.
            if isinstance(data, CallControl):
                data.cancel()
            return True
        if isinstance(data, tuple) and isinstance(data[0], Future):
            data[0].cancel()
            return True
        return False

    async def stop(self) -> None:
        self._stopping = True
        if self._look_timer is not None:
            self._look_timer.cancel()
        with self._queue.lock:
            self._wake_lingering_locked()
        if self._runners:
            await asyncio.wait(list(self._runners), timeout=KILL_GRACE * 2)
        if self._owns_executor and self.executor is not None:
            # wait=False: a function still running in a thread cannot be stopped
            self.executor.shutdown(wait=False, cancel_futures=True)
