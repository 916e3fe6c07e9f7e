"""The behaviour every RHAPSODY backend must show, as a pytest class to subclass.

Each subclass gets one event loop and one started backend per class (a pilot or
a cluster is expensive), shared by its tests through a Session; tests that need
a backend of their own (shutdown) build one with `make_backend`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from rhapsody.errors import (
    BackendNotFoundError,
    ResourceError,
    TaskCanceledError,
    TaskExecutionError,
    TaskTimeoutError,
    TaskValidationError,
)
from rhapsody.execution.backend import Backend
from rhapsody.resources import Resources
from rhapsody.session import Session
from rhapsody.states import TaskState
from rhapsody.task import BaseTask, ComputeTask
from rhapsody.testing import tasks as fn


class LoopRunner:
    """Runs coroutines on one event loop that outlives a single test, each call
    bounded by a deadline so a broken backend fails the test instead of hanging."""

    def __init__(self, deadline: float = 180.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.deadline = deadline

    def __call__(self, coro: Coroutine[Any, Any, Any], deadline: float | None = None) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, deadline or self.deadline))

    def close(self) -> None:
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def wait_for_state(task: BaseTask, *states: TaskState, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while task.state not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task.uid} is {task.state}, expected one of {[s.value for s in states]} within {timeout} s")
        await asyncio.sleep(0.02)


async def wait_for_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not written within {timeout} s")
        await asyncio.sleep(0.02)
    return path.read_text().strip()


async def wait_until_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still runs {timeout} s after its task was stopped")
        await asyncio.sleep(0.05)


def sleeper(pidfile: Path, seconds: int = 60, **kw: Any) -> ComputeTask:
    """An executable that records its pid, then sleeps (exec keeps the pid)."""
    return ComputeTask(executable="/bin/sh", arguments=["-c", f"echo $$ > {pidfile}; exec sleep {seconds}"], **kw)


class BackendConformance:
    """Subclass, override `make_backend`, and set the class attributes to what
    the engine really offers."""

    #: how many 1-core tasks the backend runs at once (queued-cancel test fills these)
    concurrency: int = 2
    #: size of the burst test
    burst_size: int = 1000
    #: seconds a single test step may take before it counts as a hang
    deadline: float = 180.0
    #: seconds a task may take to reach RUNNING in a loaded engine
    start_timeout: float = 60.0
    #: whether function tasks are supported by this backend
    runs_functions: bool = True
    #: whether executables are supported
    runs_executables: bool = True
    #: whether multi-rank executables run (``Resources(ranks=2)``); if not, they must FAIL, not run wrongly
    runs_multi_rank: bool = True

    def make_backend(self) -> Backend:
        raise NotImplementedError("override make_backend() to return an unstarted backend")

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(scope="class")
    @classmethod
    def run(cls) -> Iterator[LoopRunner]:
        runner = LoopRunner(cls.deadline)
        yield runner
        runner.close()

    @pytest.fixture(scope="class")
    @classmethod
    def session(cls, run: LoopRunner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
        backend = cls().make_backend()
        session = Session(backends=[backend], work_dir=tmp_path_factory.mktemp("conformance"))
        run(session.start())  # after Session set the work dir: engines put their sandboxes there
        yield session
        run(session.close())

    @pytest.fixture
    def submit(self, run: LoopRunner, session: Session) -> Any:
        """``submit(*tasks, wait=True)`` -> the tasks, after they ended (or not)."""

        def _submit(*tasks: BaseTask, wait: bool = True) -> list[BaseTask]:
            async def go() -> list[BaseTask]:
                await session.submit_tasks(list(tasks))
                if wait:
                    await session.wait_tasks(list(tasks))
                return list(tasks)

            return run(go())  # type: ignore[no-any-return]

        return _submit

    def _need(self, executables: bool = False, functions: bool = False) -> None:
        if executables and not self.runs_executables:
            pytest.fail(f"{type(self).__name__} declares runs_executables=False; remove this test by overriding it with a reason")
        if functions and not self.runs_functions:
            pytest.fail(f"{type(self).__name__} declares runs_functions=False; remove this test by overriding it with a reason")

    # ------------------------------------------------------------------ executables
    def test_executable_stdout(self, submit: Any) -> None:
        self._need(executables=True)
        (t,) = submit(ComputeTask(executable="/bin/echo", arguments=["hello", "world"]))
        assert t.state is TaskState.DONE, (t.state, t.exception, t.stderr)
        assert t.exit_code == 0
        assert t.stdout.strip() == "hello world"
        assert [s for s in ("NEW", "SUBMITTED", "DONE") if s not in t.timestamps] == []
        assert t.timestamps["NEW"] <= t.timestamps["SUBMITTED"] <= t.timestamps["DONE"]

    def test_nonzero_exit_fails_with_stderr(self, run: LoopRunner, submit: Any) -> None:
        self._need(executables=True)
        (t,) = submit(ComputeTask(executable="/bin/sh", arguments=["-c", "echo out; echo oops >&2; exit 3"]))
        assert t.state is TaskState.FAILED
        assert t.exit_code == 3
        assert "oops" in t.stderr and "out" in t.stdout
        with pytest.raises(TaskExecutionError) as info:
            run(_await(t))
        assert info.value.exit_code == 3 and "oops" in str(info.value)

    def test_shell_command_line(self, submit: Any) -> None:
        self._need(executables=True)
        (t,) = submit(ComputeTask(executable="echo $((2 + 3)) | tr 5 7"))
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert t.stdout.strip() == "7"

    def test_cwd_and_env(self, submit: Any, tmp_path: Path) -> None:
        self._need(executables=True)
        t = ComputeTask(
            executable="/bin/sh",
            arguments=["-c", 'echo "$RHAPSODY_CONFORMANCE"; pwd'],
            task_backend_specific_kwargs={"cwd": str(tmp_path), "env": {"RHAPSODY_CONFORMANCE": "yes"}},
        )
        submit(t)
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        lines = t.stdout.split()
        assert lines[0] == "yes"
        assert Path(lines[1]).resolve() == tmp_path.resolve()

    def test_capture_stdio_to_files(self, submit: Any) -> None:
        self._need(executables=True)
        (t,) = submit(ComputeTask(executable="/bin/sh", arguments=["-c", "echo to-file; echo err-file >&2"], capture_stdio=True))
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert Path(t.stdout).read_text().strip() == "to-file"
        assert Path(t.stderr).read_text().strip() == "err-file"

    def test_missing_executable_fails_only_that_task(self, submit: Any) -> None:
        self._need(executables=True)
        bad = ComputeTask(executable="/no/such/rhapsody-exe")
        good = ComputeTask(executable="/bin/echo", arguments=["fine"])
        submit(bad, good)
        assert bad.state is TaskState.FAILED
        assert bad.exception is not None
        assert good.state is TaskState.DONE and good.stdout.strip() == "fine"

    # ------------------------------------------------------------------ functions
    def test_sync_function(self, run: LoopRunner, submit: Any) -> None:
        self._need(functions=True)
        (t,) = submit(ComputeTask(function=fn.add, args=(2, 3)))
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert t.return_value == 5
        assert run(_await(t)) is t

    def test_async_function(self, submit: Any) -> None:
        self._need(functions=True)
        (t,) = submit(ComputeTask(function=fn.async_add, args=(20,), kwargs={"b": 22, "delay": 0.01}))
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert t.return_value == 42

    def test_function_exception_is_the_original(self, run: LoopRunner, submit: Any) -> None:
        self._need(functions=True)
        sync_t, async_t = submit(
            ComputeTask(function=fn.boom, args=("kaput",)),
            ComputeTask(function=fn.async_boom, args=("async kaput",)),
        )
        for t, text in ((sync_t, "kaput"), (async_t, "async kaput")):
            assert t.state is TaskState.FAILED
            assert type(t.exception).__name__ == "TaskBoom" and str(t.exception) == text
            assert "TaskBoom" in (t.stderr or ""), "the traceback text belongs in stderr"
            with pytest.raises(fn.TaskBoom):
                run(_await(t))

    # ------------------------------------------------------------------ cancel, timeout
    def test_cancel_running_executable_kills_it(self, run: LoopRunner, session: Session, tmp_path: Path) -> None:
        self._need(executables=True)
        pidfile = tmp_path / "pid"
        t = sleeper(pidfile)

        async def go() -> None:
            await session.submit_tasks([t])
            pid = int(await wait_for_file(pidfile, self.start_timeout))
            await wait_for_state(t, TaskState.RUNNING, timeout=self.start_timeout)
            assert await session.cancel_tasks([t]) == [True]
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
            assert await session.cancel_tasks(blockers) == [True] * len(blockers)
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
            run(_await(t))

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

    # ------------------------------------------------------------------ conventions every engine shares
    def test_missing_and_unrunnable_program(self, submit: Any, tmp_path: Path) -> None:
        """One exit code and message everywhere: 127 not found, 126 not runnable."""
        self._need(executables=True)
        plain = tmp_path / "not-executable.sh"
        plain.write_text("echo never\n")
        plain.chmod(0o644)
        missing = ComputeTask(executable="/no/such/rhapsody-exe", arguments=["x"])
        unrunnable = ComputeTask(executable=str(plain))
        bad_cwd = ComputeTask(executable="/bin/pwd", task_backend_specific_kwargs={"cwd": str(tmp_path / "no-such-dir")})
        good = ComputeTask(executable="/bin/echo", arguments=["fine"])
        submit(missing, unrunnable, bad_cwd, good)
        for t, code, words in (
            (missing, 127, ["/no/such/rhapsody-exe", "no such file"]),
            (unrunnable, 126, [str(plain), "permission denied"]),
            (bad_cwd, 126, ["no-such-dir", "no such file"]),
        ):
            assert t.state is TaskState.FAILED, (t.uid, t.state)
            assert t.exit_code == code, (t.uid, t.exit_code, t.stderr)
            assert isinstance(t.exception, TaskExecutionError)
            message = f"{t.exception} {t.stderr}".lower()
            assert all(w.lower() in message for w in words), message
        assert good.state is TaskState.DONE and good.stdout.strip() == "fine"

    def test_environment_is_inherited_and_extended(self, submit: Any) -> None:
        self._need(executables=True)
        t = ComputeTask(
            executable="/bin/sh",
            arguments=["-c", 'echo "path=$PATH"; echo "n=$RHAPSODY_N"'],
            task_backend_specific_kwargs={"env": {"RHAPSODY_N": 3}},
        )
        submit(t)
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        lines: dict[str, str] = {}
        for line in t.stdout.split():
            key, _, value = line.partition("=")
            lines[key] = value
        assert lines["n"] == "3"
        assert "/" in lines["path"], "the task's environment must extend the launching environment, not replace it"

    def test_rank_variables(self, submit: Any) -> None:
        self._need(executables=True)
        t = ComputeTask(executable="/bin/sh", arguments=["-c", 'echo "$RHAPSODY_RANK/$RHAPSODY_RANKS"'], resources=Resources(ranks=2))
        submit(t)
        if not self.runs_multi_rank:
            assert t.state is TaskState.FAILED and t.exception is not None, (
                "a backend without multi-rank support must refuse, not run 1 rank"
            )
            return
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert sorted(t.stdout.split()) == ["0/2", "1/2"]

    def test_unknown_backend_key_fails_the_task(self, submit: Any) -> None:
        def make(kw: dict[str, Any]) -> ComputeTask:
            if self.runs_executables:
                return ComputeTask(executable="/bin/true", task_backend_specific_kwargs=kw)
            return ComputeTask(function=fn.noop, task_backend_specific_kwargs=kw)

        typo, unknown, fine = make({"cwdd": "/tmp"}), make({"rhapsody_no_such_key": 1}), make({})
        submit(typo, unknown, fine)
        for t, key in ((typo, "cwdd"), (unknown, "rhapsody_no_such_key")):
            assert t.state is TaskState.FAILED
            assert isinstance(t.exception, TaskValidationError) and key in str(t.exception)
        if self.runs_executables:
            assert "did you mean 'cwd'" in str(typo.exception)
        assert fine.state is TaskState.DONE

    def test_program_path_with_a_space(self, submit: Any, tmp_path: Path) -> None:
        self._need(executables=True)
        folder = tmp_path / "with space"
        folder.mkdir()
        program = folder / "say"
        program.write_text("#!/bin/sh\necho spaced\n")
        program.chmod(0o755)
        (t,) = submit(ComputeTask(executable=str(program)))
        assert t.state is TaskState.DONE, (t.exit_code, t.stderr)
        assert t.stdout.strip() == "spaced"

    def test_background_child_does_not_hold_the_task(self, run: LoopRunner, session: Session, tmp_path: Path) -> None:
        """The task ends when its program exits; what it left running is stopped."""
        self._need(executables=True)
        pidfile = tmp_path / "child"
        t = ComputeTask(executable="/bin/sh", arguments=["-c", f"sleep 300 & echo $! > {pidfile}; echo started"])

        async def go() -> None:
            await session.submit_tasks([t])
            await session.wait_tasks([t], timeout=self.start_timeout)
            assert t.state is TaskState.DONE, (t.state, t.exception)
            assert t.stdout.strip() == "started"
            await wait_until_gone(int(pidfile.read_text()))

        run(go())

    def test_cancelled_queued_function_never_runs(self, run: LoopRunner, session: Session, tmp_path: Path) -> None:
        self._need(functions=True)
        blockers = [ComputeTask(function=fn.sleep, args=(3.0,)) for _ in range(self.concurrency)]
        marker = tmp_path / "ran"
        queued = ComputeTask(function=fn.touch, args=(str(marker),))

        async def go() -> None:
            await session.submit_tasks(blockers)
            for b in blockers:
                await wait_for_state(b, TaskState.RUNNING, timeout=self.start_timeout)
            await session.submit_tasks([queued])
            assert await session.cancel_tasks([queued]) == [True]
            await session.wait_tasks([*blockers, queued])
            await asyncio.sleep(1.5)  # time for a wrongly started call to leave its mark
            assert queued.state is TaskState.CANCELED
            assert not marker.exists(), "a task cancelled while queued must never run"
            assert all(b.state is TaskState.DONE for b in blockers), [(b.state, b.exception) for b in blockers]

        run(go())

    def test_running_is_reported(self, submit: Any) -> None:
        """Timeouts count from RUNNING: a backend that never reports it cannot time a task out."""
        tasks: list[BaseTask] = []
        if self.runs_functions:
            tasks.append(ComputeTask(function=fn.sleep, args=(1.0,)))
        if self.runs_executables:
            tasks.append(ComputeTask(executable="/bin/sleep", arguments=["1"]))
        submit(*tasks)
        for t in tasks:
            assert t.state is TaskState.DONE, (t.exception, t.stderr)
            stamps = t.timestamps
            assert "RUNNING" in stamps, f"{t.uid} ended without RUNNING being reported"
            assert stamps["SUBMITTED"] <= stamps["RUNNING"] <= stamps["DONE"]
            assert stamps["DONE"] - stamps["RUNNING"] >= 0.5, "RUNNING must be reported when the task starts, not when it ends"


async def _await(task: BaseTask) -> Any:
    return await task
