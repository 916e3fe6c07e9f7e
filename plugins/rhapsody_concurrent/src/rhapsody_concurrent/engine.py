"""RHAPSODY task model -> a ``concurrent.futures`` pool and local processes.

The only scheduling here is what a bare pool lacks: a count of free cores, so
the backend never runs more cores' worth of tasks at once than it has. Tasks
start in submission order (a large task at the head waits for room rather than
being overtaken forever).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, cast

from rhapsody.engine import CallControl, EngineContext, Outcome, TaskHandle, call_function, call_packed, pack_call
from rhapsody.engine.host import gpu_count
from rhapsody.engine.process import KILL_GRACE, Command
from rhapsody.engine.sampling import LocalNodeSampler
from rhapsody.errors import BackendError
from rhapsody.resources import Capacity, NodeSample
from rhapsody_concurrent.pools import replacement_pool
from rhapsody_concurrent.threads import DaemonThreadPool


class ConcurrentEngine:
    engine_name = "concurrent"

    def __init__(self, executor: Executor | None, cores: int) -> None:
        self.executor = executor
        self._owns_executor = executor is None
        self.cores = cores
        self.gpus = gpu_count()  # once: nvidia-smi is not cheap, and a node's GPUs do not change
        self._free = cores
        self._queue: deque[TaskHandle] = deque()
        self._suspects: deque[TaskHandle] = deque()  # ran in a process pool that broke: rerun alone
        self._in_pool = 0
        self._runners: set[asyncio.Task[None]] = set()
        self._sampler: LocalNodeSampler | None = None

    def capacity(self) -> Capacity:
        return Capacity.node(self.cores, gpus=self.gpus)

    async def sample_resources(self) -> list[NodeSample]:
        """This host, where the pool's tasks run (telemetry polls this)."""
        if self._sampler is None:
            self._sampler = LocalNodeSampler()
        return self._sampler.sample()

    async def start(self, context: EngineContext) -> None:
        self._context = context
        if self.executor is None:
            self.executor = DaemonThreadPool(self.cores, name=f"rhapsody-{context.name}")

    @property
    def _pickles(self) -> bool:
        return isinstance(self.executor, ProcessPoolExecutor)

    # ---------------------------------------------------------------- dispatch
    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        self._queue.extend(handles)
        self._dispatch()

    def _dispatch(self) -> None:
        if self._suspects:  # a broken pool is being diagnosed: one suspect at a time, alone
            if self._in_pool == 0:
                self._start_function(self._suspects.popleft())
            return
        while self._queue:
            handle = self._queue[0]
            need = handle.task.resources.cores
            if need > self._free:
                return
            self._queue.popleft()
            self._free -= need
            if handle.launch is not None:
                runner = asyncio.ensure_future(self._run_command(handle))
                self._runners.add(runner)
                runner.add_done_callback(self._runners.discard)
            else:
                self._start_function(handle)

    def _release(self, handle: TaskHandle) -> None:
        self._free += handle.task.resources.cores
        self._dispatch()

    # ---------------------------------------------------------------- functions
    def _start_function(self, handle: TaskHandle) -> None:
        task: Any = handle.task
        if task.resources.ranks > 1:
            self._release(handle)
            handle.failed(
                BackendError(f"{self._context.name}: multi-rank function tasks need an MPI-capable backend (dragon, radical_pilot)")
            )
            return
        assert self.executor is not None
        future: Future[Any]
        # a suspect rerun alone keeps its mark: if it breaks this pool too, it is the culprit
        alone = "alone" if isinstance(handle.engine_data, tuple) and handle.engine_data[1] == "alone" else None
        try:
            if self._pickles:
                future = self.executor.submit(call_packed, pack_call(task.function, task.args, task.kwargs, task.uid))
                self._in_pool += 1
                handle.running()
                future.add_done_callback(lambda f: self._context.call_soon(self._pool_call_ended, handle, f))
            else:
                control = CallControl()
                future = self.executor.submit(self._call_in_thread, handle, control)
                handle.engine_data = (future, control)
                return
        except Exception as exc:  # noqa: BLE001 - unpicklable call, pool shut down: this task says so
            self._release(handle)
            handle.failed(exc)
            return
        handle.engine_data = (future, alone)

    def _call_in_thread(self, handle: TaskHandle, control: CallControl) -> None:
        # a pool thread: report RUNNING only when the call really starts
        if handle.cancel_requested:
            self._context.call_soon(self._thread_call_ended, handle, None)
            return
        handle.running()
        task: Any = handle.task
        outcome = call_function(task.function, task.args, task.kwargs, control)
        self._context.call_soon(self._thread_call_ended, handle, outcome)

    def _thread_call_ended(self, handle: TaskHandle, outcome: Outcome | None) -> None:
        self._release(handle)
        if outcome is not None:
            handle.finish(outcome)

    def _pool_call_ended(self, handle: TaskHandle, future: Future[bytes]) -> None:
        self._in_pool -= 1
        self._free += handle.task.resources.cores
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
        self._free -= handle.task.resources.cores
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
            handle.running()
            handle.finish(await command.wait_async())
        except Exception as exc:  # noqa: BLE001 - whatever broke, this task says so
            command.stop()
            handle.failed(exc)
        finally:
            self._release(handle)

    # ---------------------------------------------------------------- cancel, stop
    async def cancel(self, handle: TaskHandle) -> bool:
        if handle in self._queue:
            self._queue.remove(handle)
            return True
        if handle in self._suspects:
            self._suspects.remove(handle)
            self._release(handle)
            return True
        data = handle.engine_data
        if isinstance(data, Command):
            data.stop(KILL_GRACE)
            return True
        if isinstance(data, tuple) and isinstance(data[0], Future):
            # A running sync function cannot be interrupted: it is reported
            # CANCELED now, its late result is dropped, and its cores stay
            # counted as busy until the call really returns.
            future, control = data
            future.cancel()
            if isinstance(control, CallControl):
                control.cancel()
            return True
        return False

    async def stop(self) -> None:
        if self._runners:
            await asyncio.wait(list(self._runners), timeout=KILL_GRACE * 2)
        if self._owns_executor and self.executor is not None:
            # wait=False: a function still running in a thread cannot be stopped
            self.executor.shutdown(wait=False, cancel_futures=True)
