"""RHAPSODY task model -> ``concurrent.futures`` pool and local subprocesses.

The only scheduling here is what a bare pool lacks: a count of free cores, so
the backend never runs more cores' worth of tasks at once than it has. Tasks
start in submission order (a large task at the head waits for room rather than
being overtaken forever).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import cloudpickle

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.errors import BackendError, TaskExecutionError
from rhapsody.resources import Resources
from rhapsody.states import TaskState
from rhapsody.task import BaseTask, ComputeTask
from rhapsody_concurrent import calls, processes


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ConcurrentExecutionBackend(BaseExecutionBackend):
    """Functions on ``executor`` (default: a thread pool with one thread per
    core), executables as subprocesses.

    ``cores``: how many cores' worth of tasks may run at once; default the
    ``max_workers`` of the executor you pass, else the cores this process may
    use. A user's executor is left open at shutdown: it is theirs.
    """

    def __init__(self, name: str = "concurrent", executor: Executor | None = None, *, cores: int | None = None) -> None:
        super().__init__(name)
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
        if cores is not None and (not isinstance(cores, int) or cores < 1):
            raise ValueError(f"cores must be a positive int, got {cores!r}")
        self._executor = executor
        self._owns_executor = executor is None
        self._cores = cores or getattr(executor, "_max_workers", None) or _cpu_count()
        self._free = self._cores
        self._queue: deque[ComputeTask] = deque()
        self._futures: dict[str, Future[Any]] = {}
        self._procs: dict[str, list[asyncio.subprocess.Process]] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._ended: deque[tuple[ComputeTask, Future[Any]]] = deque()
        self._handles: dict[str, calls.AsyncHandle] = {}
        self._drain_pending = False

    @property
    def executor(self) -> Executor | None:
        return self._executor

    def capacity(self) -> Resources:
        return Resources(ranks=self._cores, cores_per_rank=1, gpus_per_rank=0)

    async def _start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._cores, thread_name_prefix=f"rhapsody-{self.name}")
        self._pickles = isinstance(self._executor, ProcessPoolExecutor)

    # ---------------------------------------------------------------- dispatch
    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        self._queue.extend(tasks)  # type: ignore[arg-type]
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue:
            task = self._queue[0]
            need = task.resources.cores
            if need > self._free:
                return
            self._queue.popleft()
            self._free -= need
            if task.is_function:
                self._start_function(task)
            else:
                self._runners[task.uid] = asyncio.ensure_future(self._run_executable(task))

    def _release(self, task: ComputeTask) -> None:
        self._free += task.resources.cores
        self._dispatch()

    # ---------------------------------------------------------------- functions
    def _start_function(self, task: ComputeTask) -> None:
        if task.resources.ranks > 1:
            self._release(task)
            self.report_failure(
                task, BackendError(f"{self.name}: multi-rank function tasks need an MPI-capable backend (dragon, radical_pilot)")
            )
            return
        assert self._executor is not None
        try:
            if self._pickles:
                future = self._executor.submit(calls.call_pickled, cloudpickle.dumps((task.function, task.args, task.kwargs)))
            else:
                handle = calls.AsyncHandle()
                self._handles[task.uid] = handle
                future = self._executor.submit(calls.call, task.function, task.args, task.kwargs, handle)
        except Exception as exc:  # noqa: BLE001 - e.g. unpicklable function, pool shut down
            self._release(task)
            self.report_failure(task, exc)
            return
        self._futures[task.uid] = future
        self.report_running(task)
        future.add_done_callback(lambda f: self._ended_in_worker(task, f))

    def _ended_in_worker(self, task: ComputeTask, future: Future[Any]) -> None:
        # Worker thread. Completions are queued and drained in one loop callback:
        # one wake-up of the event loop serves every call that ended meanwhile.
        self._ended.append((task, future))
        if not self._drain_pending:
            self._drain_pending = True
            self._threadsafe(self._drain_ended)

    def _drain_ended(self) -> None:
        self._drain_pending = False  # reset first: a later append schedules a new drain
        ended = self._ended
        while ended:
            self._function_ended(*ended.popleft())

    def _function_ended(self, task: ComputeTask, future: Future[Any]) -> None:
        self._futures.pop(task.uid, None)
        self._handles.pop(task.uid, None)
        self._release(task)
        if future.cancelled():
            return  # cancelled before it started; core already marked it
        exc = future.exception()
        if exc is not None:
            self.report_failure(task, exc)
        else:
            self.report_result(task, return_value=future.result())

    # ---------------------------------------------------------------- executables
    async def _run_executable(self, task: ComputeTask) -> None:
        ranks = task.resources.ranks
        files: list[Any] = []
        try:
            if task.capture_stdio:
                out_path, err_path = self.artifact_path(task, "out"), self.artifact_path(task, "err")
                out_f, err_f = processes.capture_files(out_path, err_path)
                files = [out_f, err_f]
                stdout: Any = out_f
                stderr: Any = err_f
            else:
                stdout = stderr = asyncio.subprocess.PIPE
            procs: list[asyncio.subprocess.Process] = []
            self._procs[task.uid] = procs
            try:
                for rank in range(ranks):
                    procs.append(await processes.spawn(task, rank, ranks, stdout, stderr))
            except OSError as exc:
                await processes.kill_tree(procs)
                error = TaskExecutionError(
                    task.uid, f"task {task.uid}: cannot start {task.executable!r}: {exc.strerror or exc}", None, str(exc)
                )
                error.__cause__ = exc
                self.report_failure(task, error, stderr=str(exc))
                return
            if task.state.is_terminal:  # cancelled while its processes were being spawned
                await processes.kill_tree(procs)
                return
            self.report_running(task)
            outputs = await asyncio.gather(*(p.communicate() for p in procs))
            codes = [p.returncode for p in procs]
            exit_code = next((c for c in codes if c != 0), 0)
            if task.capture_stdio:
                self.report_result(task, exit_code=exit_code, stdout=str(out_path), stderr=str(err_path))
            else:
                self.report_result(
                    task,
                    exit_code=exit_code,
                    stdout="".join(processes.decode(o) for o, _ in outputs),
                    stderr="".join(processes.decode(e) for _, e in outputs),
                )
        except Exception as exc:  # noqa: BLE001 - whatever broke, this task says so
            self.report_failure(task, exc)
        finally:
            for fh in files:
                fh.close()
            self._procs.pop(task.uid, None)
            self._runners.pop(task.uid, None)
            self._release(task)

    # ---------------------------------------------------------------- cancel, stop
    async def _cancel(self, task: BaseTask) -> bool:
        if task in self._queue:
            self._queue.remove(task)  # type: ignore[arg-type]
            return True
        future = self._futures.get(task.uid)
        if future is not None:
            # An async function is cancelled on its worker's loop. A running sync
            # function cannot be interrupted: the task is reported CANCELED now,
            # its late result is dropped, and its core stays counted as busy
            # until the call really returns.
            future.cancel()
            handle = self._handles.get(task.uid)
            if handle is not None:
                handle.cancel()
            return True
        procs = self._procs.get(task.uid)
        if procs is not None:
            await processes.kill_tree(procs)
            return True
        runner = self._runners.get(task.uid)
        if runner is not None:  # between dispatch and spawn
            runner.cancel()
            return True
        return task.state is not TaskState.DONE

    async def _stop(self) -> None:
        runners = list(self._runners.values())
        if runners:
            await asyncio.wait(runners, timeout=processes.KILL_GRACE_S * 2)
        if self._owns_executor and self._executor is not None:
            # wait=False: a function still running in a thread cannot be stopped,
            # and shutdown must not hang on it.
            self._executor.shutdown(wait=False, cancel_futures=True)
