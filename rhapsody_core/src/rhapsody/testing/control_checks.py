"""Conformance: cancel, timeouts, bad input, bursts, shutdown, radical.asyncflow."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from rhapsody.errors import (
    BackendNotFoundError,
    ResourceError,
    TaskCanceledError,
    TaskTimeoutError,
    TaskValidationError,
)
from rhapsody.resources import Resources
from rhapsody.session import Session
from rhapsody.states import TaskState
from rhapsody.task import BaseTask, ComputeTask
from rhapsody.testing import tasks as fn
from rhapsody.testing.base import ConformanceBase
from rhapsody.testing.waiting import LoopRunner, await_task, sleeper, wait_for_file, wait_for_state, wait_until_gone


class ControlChecks(ConformanceBase):
    # ------------------------------------------------------------------ cancel, timeout
    def test_cancel_running_executable_kills_it(self, run: LoopRunner, session: Session, tmp_path: Path) -> None:
        self._need(executables=True)
        pidfile = tmp_path / "pid"
        t = sleeper(pidfile)

        async def go() -> None:
            await session.submit_tasks([t])
            pid = int(await wait_for_file(pidfile, self.start_timeout))
            await wait_for_state(t, TaskState.RUNNING, timeout=self.start_timeout)
            stopped = await session.cancel_tasks([t])
            assert stopped == [True], (t.state.value, repr(t.exception), t.stderr)
            assert t.state is TaskState.CANCELED
            await wait_until_gone(pid)
            with pytest.raises(TaskCanceledError):
                await t

        run(go())

    def test_cancel_running_function_never_reports_done(self, run: LoopRunner, session: Session) -> None:
        self._need(functions=True)
        t = ComputeTask(function=fn.sleep, args=(1.5,))

        async def go() -> None:
            await session.submit_tasks([t])
            await wait_for_state(t, TaskState.RUNNING, timeout=self.start_timeout)
            assert await session.cancel_tasks([t]) == [True]
            await asyncio.sleep(2.5)  # past the function's natural end: its late result must be ignored
            assert t.state is TaskState.CANCELED
            assert "DONE" not in t.timestamps

        run(go())

    def test_cancel_queued_task(self, run: LoopRunner, session: Session, tmp_path: Path) -> None:
        self._need(executables=True)
        blockers = [sleeper(tmp_path / f"pid{i}") for i in range(self.concurrency)]
        queued = ComputeTask(executable="/bin/echo", arguments=["must not run"])

        async def go() -> None:
            await session.submit_tasks(blockers)
            for i, b in enumerate(blockers):
                await wait_for_file(tmp_path / f"pid{i}", self.start_timeout)
                await wait_for_state(b, TaskState.RUNNING, timeout=self.start_timeout)
            await session.submit_tasks([queued])
            await asyncio.sleep(0.5)
            assert queued.state is TaskState.SUBMITTED, f"the backend ran more than concurrency={self.concurrency} tasks at once"
            assert await session.cancel_tasks([queued]) == [True]
            stopped = await session.cancel_tasks(blockers)
            assert stopped == [True] * len(blockers), [(b.uid, b.state.value, repr(b.exception)) for b in blockers]
            await session.wait_tasks([queued, *blockers])
            assert queued.state is TaskState.CANCELED and queued.stdout is None
            assert all(b.state is TaskState.CANCELED for b in blockers)

        run(go())

    def test_cancel_ended_task_is_false(self, run: LoopRunner, submit: Any, session: Session) -> None:
        self._need(executables=True)
        (t,) = submit(ComputeTask(executable="/bin/true"))
        assert run(session.cancel_tasks([t])) == [False]
        assert t.state is TaskState.DONE

    def test_timeout_stops_executable(self, run: LoopRunner, session: Session, tmp_path: Path) -> None:
        self._need(executables=True)
        pidfile = tmp_path / "pid"
        t = sleeper(pidfile, timeout=1.0)

        async def go() -> None:
            await session.submit_tasks([t])
            pid = int(await wait_for_file(pidfile, self.start_timeout))
            await session.wait_tasks([t])
            assert t.state is TaskState.FAILED
            assert isinstance(t.exception, TaskTimeoutError)
            await wait_until_gone(pid)
            with pytest.raises(TaskTimeoutError):
                await t

        run(go())

    def test_timeout_function(self, submit: Any) -> None:
        self._need(functions=True)
        (t,) = submit(ComputeTask(function=fn.sleep, args=(5,), timeout=0.5))
        assert t.state is TaskState.FAILED
        assert isinstance(t.exception, TaskTimeoutError)

    # ------------------------------------------------------------------ bad input, resources
    def test_impossible_resources_fail_at_once(self, run: LoopRunner, submit: Any) -> None:
        huge = Resources(ranks=1, cores_per_rank=100_000)
        t = ComputeTask(executable="/bin/true", resources=huge) if self.runs_executables else ComputeTask(function=fn.noop, resources=huge)
        t0 = time.monotonic()
        submit(t)
        assert t.state is TaskState.FAILED
        assert isinstance(t.exception, ResourceError), t.exception
        assert time.monotonic() - t0 < self.deadline
        with pytest.raises(ResourceError):
            run(await_task(t))

    def test_unknown_backend_submits_nothing(self, run: LoopRunner, session: Session) -> None:
        ok = ComputeTask(executable="/bin/true") if self.runs_executables else ComputeTask(function=fn.noop)
        lost = ComputeTask(executable="/bin/true", backend="no-such-backend")
        with pytest.raises(BackendNotFoundError, match="no-such-backend"):
            run(session.submit_tasks([ok, lost]))
        assert ok.state is TaskState.NEW and lost.state is TaskState.NEW

    def test_resubmission_is_refused(self, run: LoopRunner, submit: Any, session: Session) -> None:
        t = ComputeTask(executable="/bin/true") if self.runs_executables else ComputeTask(function=fn.noop)
        submit(t)
        with pytest.raises(TaskValidationError, match="already submitted"):
            run(session.submit_tasks([t]))

    def test_dict_descriptions_are_accepted(self, run: LoopRunner, session: Session) -> None:
        desc: dict[str, Any] = (
            {"uid": f"dict-{os.getpid()}-{time.monotonic_ns()}", "executable": "/bin/echo", "arguments": ["from", "dict"], "custom": 1}
            if self.runs_executables
            else {"uid": f"dict-{os.getpid()}-{time.monotonic_ns()}", "function": fn.add, "args": (1, 2), "custom": 1}
        )

        async def go() -> BaseTask:
            (fut,) = await session.submit_tasks([desc])
            return await fut

        t = run(go())
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert t.metadata["custom"] == 1
        assert desc["state"] == "DONE"

    # ------------------------------------------------------------------ scale, mixes
    def test_burst(self, run: LoopRunner, session: Session) -> None:
        self._need(functions=True)
        batch = [ComputeTask(function=fn.echo, args=(i,)) for i in range(self.burst_size)]

        async def go() -> None:
            await session.submit_tasks(batch)
            await session.wait_tasks(batch)

        run(go())
        failed = [t for t in batch if t.state is not TaskState.DONE]
        assert not failed, f"{len(failed)} of {len(batch)} failed, first: {failed[0].state} {failed[0].exception!r}"
        assert [t.return_value for t in batch] == list(range(self.burst_size))

    def test_mixed_sync_async_executable(self, submit: Any) -> None:
        mixed: list[BaseTask] = []
        for i in range(6):
            if self.runs_functions:
                mixed.append(ComputeTask(function=fn.add, args=(i, 1)))
                mixed.append(ComputeTask(function=fn.async_add, args=(i, 2)))
            if self.runs_executables:
                mixed.append(ComputeTask(executable="/bin/echo", arguments=[str(i)]))
        submit(*mixed)
        assert all(t.state is TaskState.DONE for t in mixed), [
            (t.uid, t.state, t.exception) for t in mixed if t.state is not TaskState.DONE
        ]

    # ------------------------------------------------------------------ shutdown, asyncflow
    def test_shutdown_cancels_tasks_in_flight(self, run: LoopRunner, tmp_path: Path) -> None:
        """Every process that started is gone after close, not only the first."""
        self._need(executables=True)
        backend = self.make_backend()
        pidfiles = [tmp_path / f"pid{i}" for i in range(self.concurrency + 1)]
        tasks = [sleeper(p) for p in pidfiles]

        async def go() -> None:
            session = Session(backends=[backend], work_dir=tmp_path)
            await session.submit_tasks(tasks)
            for pidfile in pidfiles[: self.concurrency]:
                await wait_for_file(pidfile, self.start_timeout)
            await session.close()
            assert all(t.state.is_terminal for t in tasks), [t.state for t in tasks]
            assert all(t.state is not TaskState.DONE for t in tasks)
            started = [int(p.read_text()) for p in pidfiles if p.exists() and p.read_text().strip()]
            assert len(started) >= self.concurrency
            for pid in started:
                await wait_until_gone(pid)
            assert backend.state() == "STOPPED"

        run(go())

    def test_radical_asyncflow_drives_the_backend(self, run: LoopRunner, session: Session) -> None:
        from radical.asyncflow import WorkflowEngine  # noqa: PLC0415

        backend = next(iter(session.backends.values()))

        async def go() -> tuple[Any, Any]:
            flow = await WorkflowEngine.create(backend=backend, work_dir=str(session.work_dir))
            try:
                results: list[Any] = []
                if self.runs_functions:

                    @flow.function_task
                    async def double(x: int) -> int:
                        return 2 * x

                    results.append(await double(21))
                if self.runs_executables:

                    @flow.executable_task
                    async def greet(name: str) -> str:
                        return f"/bin/echo hello {name}"

                    results.append(await greet("flow"))
                return tuple(results) if len(results) == 2 else (results[0], None)
            finally:
                await flow.shutdown(skip_execution_backend=True)

        first, second = run(go())
        if self.runs_functions:
            assert first == 42
        if self.runs_executables:
            out = second if self.runs_functions else first
            assert out.strip() == "hello flow"
