"""Conformance: executables, and the launch conventions every engine shares."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rhapsody.errors import (
    TaskExecutionError,
    TaskValidationError,
)
from rhapsody.resources import Resources
from rhapsody.session import Session
from rhapsody.states import TaskState
from rhapsody.task import BaseTask, ComputeTask
from rhapsody.testing import tasks as fn
from rhapsody.testing.base import ConformanceBase
from rhapsody.testing.waiting import LoopRunner, await_task, wait_for_state, wait_until_gone


class ExecutableChecks(ConformanceBase):
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
            run(await_task(t))
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
