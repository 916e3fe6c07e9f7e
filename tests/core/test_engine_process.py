"""`rhapsody.engine.process`: how every engine that uses it launches an
executable task (real processes, real signals)."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from toys import AsyncioEngine, pid_alive

from rhapsody import Backend, ComputeTask, TaskExecutionError, TaskState
from rhapsody.engine.launch import LaunchSpec
from rhapsody.engine.process import Command, CommandTable, preflight, run

SECRET = "s3cr3t-token-value-4711"


def sh(uid: str, script: str, **kw: object) -> LaunchSpec:
    return LaunchSpec(uid, ["/bin/sh", "-c", script], **kw)  # type: ignore[arg-type]


def wait_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} not written within {timeout} s"
        time.sleep(0.01)
    return path.read_text().strip()


def wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive after {timeout} s"
        time.sleep(0.02)


# ------------------------------------------------------------------ output and exit codes
def test_output_and_exit_code_are_kept() -> None:
    outcome = run(sh("out", "echo to-out; echo to-err >&2; exit 3"))
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (3, "to-out\n", "to-err\n")
    assert not outcome.ok and outcome.error is None
    assert run(LaunchSpec("ok", ["/bin/true"])).ok


def test_capture_paths(tmp_path: Path) -> None:
    out, err = tmp_path / "t.stdout", tmp_path / "t.stderr"
    outcome = run(sh("t", "echo hello; echo oops >&2", stdout_path=str(out), stderr_path=str(err)))
    assert outcome.exit_code == 0 and outcome.stdout == str(out) and outcome.stderr == str(err)
    assert out.read_text() == "hello\n" and err.read_text() == "oops\n"


def test_env_is_layered_over_the_launching_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHAPSODY_TEST_INHERITED", "from-parent")
    outcome = run(sh("env", "echo $RHAPSODY_TEST_INHERITED $EXTRA", env={"EXTRA": "over"}))
    assert outcome.stdout == "from-parent over\n"


def test_cwd(tmp_path: Path) -> None:
    assert run(LaunchSpec("cwd", ["/bin/pwd"], cwd=str(tmp_path))).stdout == f"{tmp_path}\n"


# ------------------------------------------------------------------ cannot start: 127 / 126
def _failures(tmp_path: Path) -> dict[str, tuple[LaunchSpec, int, list[str]]]:
    plain = tmp_path / "plain.sh"
    plain.write_text("echo never\n")
    plain.chmod(0o644)
    env = {"API_TOKEN": SECRET}
    return {
        "missing-path": (LaunchSpec("a", ["/no/such/prog-x", "arg"], env=env), 127, ["/no/such/prog-x", "no such file"]),
        "missing-on-path": (LaunchSpec("b", ["rhapsody-no-such-program-x"], env=env), 127, ["rhapsody-no-such-program-x", "no such file"]),
        "not-executable": (LaunchSpec("c", [str(plain)], env=env), 126, [str(plain), "permission denied"]),
        "directory": (LaunchSpec("d", [str(tmp_path)], env=env), 126, [str(tmp_path), "permission denied"]),
        "missing-cwd": (
            LaunchSpec("e", ["/bin/pwd"], env=env, cwd=str(tmp_path / "gone")),
            126,
            ["working directory", "gone", "no such file"],
        ),
    }


CASES = ["missing-path", "missing-on-path", "not-executable", "directory", "missing-cwd"]


@pytest.mark.parametrize("case", CASES)
def test_cannot_start_exit_code_and_message(case: str, tmp_path: Path) -> None:
    spec, code, words = _failures(tmp_path)[case]
    outcome = run(spec)
    assert outcome.exit_code == code, outcome.stderr
    message = outcome.stderr or ""
    for word in words:
        assert word in message.lower() or word in message, (word, message)
    for text in (message, repr(outcome), repr(spec), outcome.stdout or ""):
        assert SECRET not in text, "an environment value leaked into a message"


@pytest.mark.parametrize("case", CASES)
def test_preflight_agrees_with_run(case: str, tmp_path: Path) -> None:
    spec, code, _ = _failures(tmp_path)[case]
    early, late = preflight(spec), run(spec)
    assert early is not None, "preflight saw no problem"
    assert (early.exit_code, early.stderr) == (late.exit_code, late.stderr) == (code, late.stderr)


def test_preflight_passes_a_runnable_spec(tmp_path: Path) -> None:
    assert preflight(LaunchSpec("ok", ["/bin/true"])) is None
    assert preflight(LaunchSpec("ok", ["true"])) is None, "searched on PATH"
    assert preflight(sh("ok", "exit 0", cwd=str(tmp_path))) is None


def test_cannot_start_message_goes_to_the_capture_file(tmp_path: Path) -> None:
    err = tmp_path / "x.stderr"
    outcome = run(LaunchSpec("x", ["/no/such/prog-y"], stdout_path=str(tmp_path / "x.stdout"), stderr_path=str(err)))
    assert outcome.exit_code == 127 and outcome.stderr == str(err)
    assert "/no/such/prog-y" in err.read_text()


# ------------------------------------------------------------------ process groups
def test_background_child_does_not_hold_the_command_open(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    t0 = time.monotonic()
    outcome = run(sh("bg", f"sleep 300 & echo $! > {pidfile}; echo started"))
    assert time.monotonic() - t0 < 30, "the command waited for its background child"
    assert outcome.exit_code == 0 and outcome.stdout == "started\n", "output written so far is kept"
    wait_gone(int(pidfile.read_text()))


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    child, grandchild = tmp_path / "child.pid", tmp_path / "grandchild.pid"
    inner = f"sleep 300 & echo $! > {grandchild}; wait"
    command = Command(sh("stop", f"/bin/sh -c '{inner}' & echo $! > {child}; wait"))
    assert command.start() is None
    pids = [int(wait_file(child)), int(wait_file(grandchild))]
    t0 = time.monotonic()
    command.stop(grace=1.0)
    outcome = command.wait()
    assert time.monotonic() - t0 < 30
    assert outcome.exit_code is not None and outcome.exit_code < 0, "ended by a signal"
    for pid in pids:
        wait_gone(pid)


def test_stop_before_start_never_starts() -> None:
    command = Command(LaunchSpec("early", ["/bin/sleep", "300"]))
    command.stop()
    outcome = command.start()
    assert outcome is not None and outcome.exit_code is not None and outcome.exit_code < 0
    assert command.procs == []


def test_multi_rank_environment(tmp_path: Path) -> None:
    script = "echo $RHAPSODY_RANK/$RHAPSODY_RANKS/$EXTRA"
    outcome = run(sh("ranks", script, ranks=3, env={"EXTRA": "x"}))
    assert outcome.exit_code == 0
    assert sorted((outcome.stdout or "").split()) == ["0/3/x", "1/3/x", "2/3/x"]
    single = run(sh("one", "echo ${RHAPSODY_RANK-unset} ${RHAPSODY_RANKS-unset}"))
    assert single.stdout == "unset unset\n", "one rank gets no rank variables"
    spec = LaunchSpec("r", ["/bin/true"], ranks=2)
    assert spec.rank_env(1) == {"RHAPSODY_RANK": "1", "RHAPSODY_RANKS": "2"}


def test_multi_rank_capture_and_failing_rank(tmp_path: Path) -> None:
    out = tmp_path / "m.stdout"
    # rank 0 writes last: before the fix its write, at offset 0 of its own file
    # description, overwrote what rank 1 had already written
    script = '[ "$RHAPSODY_RANK" = 0 ] && sleep 0.3; echo rank$RHAPSODY_RANK; [ "$RHAPSODY_RANK" != 1 ] || exit 9'
    out.write_text("stale output of an earlier run\n")
    outcome = run(sh("m", script, ranks=2, stdout_path=str(out), stderr_path=str(tmp_path / "m.stderr")))
    assert outcome.exit_code == 9, "a failing rank fails the task"
    assert sorted(out.read_text().split()) == ["rank0", "rank1"], "ranks share the capture file"


def test_wait_async(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"

    async def go() -> tuple[object, ...]:
        command = Command(sh("async", f"sleep 300 & echo $! > {pidfile}; echo async-out; exit 4"))
        assert command.start() is None
        outcome = await asyncio.wait_for(command.wait_async(), 30)
        return outcome.exit_code, outcome.stdout

    assert asyncio.run(go()) == (4, "async-out\n")
    wait_gone(int(pidfile.read_text()))


# ------------------------------------------------------------------ CommandTable
def test_command_table_stop_before_run_means_never() -> None:
    table = CommandTable()
    assert table.stop("later") is False
    assert table.run(LaunchSpec("later", ["/bin/sleep", "300"])) is None
    outcome = table.run(LaunchSpec("later", ["/bin/echo", "again"]))
    assert outcome is not None and outcome.stdout == "again\n", "the stop was used up"


def test_command_table_stop_from_another_thread(tmp_path: Path) -> None:
    table = CommandTable()
    pidfile = tmp_path / "p"
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(table.run(sh("long", f"echo $$ > {pidfile}; exec sleep 300"))))
    worker.start()
    pid = int(wait_file(pidfile))
    assert table.stop("long", grace=1.0) is True
    worker.join(30)
    assert not worker.is_alive()
    (outcome,) = result
    assert outcome is not None and outcome.exit_code < 0  # type: ignore[attr-defined]
    wait_gone(pid)


def test_command_table_forgets_old_stops() -> None:
    table = CommandTable(remember=2)
    for uid in ("a", "b", "c"):
        table.stop(uid)
    assert table.run(LaunchSpec("a", ["/bin/true"])) is not None, "the oldest stop was forgotten"
    assert table.run(LaunchSpec("c", ["/bin/true"])) is None


# ------------------------------------------------------------------ a cheap import for workers
def test_importing_the_launcher_stays_light() -> None:
    code = (
        "import sys\n"
        "import rhapsody.engine.process\n"
        "heavy = [m for m in ('rhapsody.session', 'rhapsody.execution.backend', 'structlog', 'pluggy', 'attrs', 'cattrs') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHAPSODY_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ the spec itself
def test_launch_spec_travels_and_never_shows_env_values() -> None:
    spec = LaunchSpec("s", ["/bin/sh", "-c", "echo hi"], env={"API_TOKEN": SECRET}, cwd="/tmp", ranks=2, timeout=5.0)
    back = pickle.loads(pickle.dumps(spec))
    fields = ("uid", "argv", "env", "cwd", "stdout_path", "stderr_path", "ranks", "timeout")
    assert [getattr(back, f) for f in fields] == [getattr(spec, f) for f in fields]
    assert SECRET not in repr(spec) and "API_TOKEN" in repr(spec)
    assert spec.program == "echo hi" and LaunchSpec("p", ["/bin/echo", "x"]).program == "/bin/echo"
    assert LaunchSpec("p", ["/bin/true"]).environ() is None, "nothing to add: the launching environment as it is"


def test_unrunnable_program_fails_its_task_with_the_reason(tmp_path: Path) -> None:
    """Through a backend: exit 127, FAILED, and the message (read back from the
    capture file) names the program."""
    missing = ComputeTask(executable="/no/such/prog-z", arguments=["a"], capture_stdio=True)
    plain = ComputeTask(executable="/no/such/prog-w", arguments=["a"])
    backend = Backend(AsyncioEngine(), "asyncio")
    backend.work_dir = tmp_path

    async def go() -> None:
        async with backend:
            await backend.submit_tasks([missing, plain])
            for t in (missing, plain):
                with pytest.raises(TaskExecutionError, match=r"code 127.*cannot run '/no/such/prog-.'.*no such file"):
                    await t

    asyncio.run(asyncio.wait_for(go(), 60))
    assert missing.state is TaskState.FAILED and missing.exit_code == 127 and missing.stderr == str(tmp_path / f"{missing.uid}.stderr")
