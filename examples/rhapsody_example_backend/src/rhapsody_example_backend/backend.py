"""Each RHAPSODY task becomes one asyncio task: functions run in worker threads,
executables as subprocesses. A semaphore stands in for the engine's slots."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.resources import Resources


class InlineBackend(BaseExecutionBackend):
    def __init__(self, name: str = "asyncio_inline", slots: int = 2) -> None:
        super().__init__(name)
        self._slots, self._jobs, self._procs = slots, {}, {}

    def capacity(self) -> Resources:
        return Resources(ranks=1, cores_per_rank=1)

    async def _start(self) -> None:
        self._gate = asyncio.Semaphore(self._slots)

    async def _submit(self, tasks) -> None:
        for task in tasks:
            self._jobs[task.uid] = asyncio.ensure_future(self._run(task))

    async def _run(self, task) -> None:
        async with self._gate:
            self.report_running(task)
            try:
                if task.is_function:
                    call = (
                        task.function(*task.args, **task.kwargs)
                        if inspect.iscoroutinefunction(task.function)
                        else asyncio.to_thread(task.function, *task.args, **task.kwargs)
                    )
                    self.report_result(task, return_value=await call)
                else:
                    kw = task.task_backend_specific_kwargs
                    env = {**os.environ, **kw.get("env", {})}
                    if not task.arguments and " " in task.executable.strip():
                        proc = await asyncio.create_subprocess_shell(
                            task.executable, stdout=-1, stderr=-1, cwd=kw.get("cwd"), env=env, start_new_session=True
                        )
                    else:
                        proc = await asyncio.create_subprocess_exec(
                            task.executable, *task.arguments, stdout=-1, stderr=-1, cwd=kw.get("cwd"), env=env, start_new_session=True
                        )
                    self._procs[task.uid] = proc
                    out, err = await proc.communicate()
                    if task.capture_stdio:
                        self.artifact_path(task, "out").write_bytes(out)
                        self.artifact_path(task, "err").write_bytes(err)
                        out, err = str(self.artifact_path(task, "out")).encode(), str(self.artifact_path(task, "err")).encode()
                    self.report_result(task, exit_code=proc.returncode, stdout=out.decode(), stderr=err.decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the task's own failure
                self.report_failure(task, exc)
            finally:
                self._jobs.pop(task.uid, None)
                self._procs.pop(task.uid, None)

    async def _cancel(self, task) -> bool:
        proc = self._procs.get(task.uid)
        if proc is not None and proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
        job = self._jobs.get(task.uid)
        if job is not None:
            job.cancel()
        return job is not None or proc is not None
