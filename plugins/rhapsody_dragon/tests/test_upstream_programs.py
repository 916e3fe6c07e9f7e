"""Programs written the way rhapsody-py 0.6's docs and examples write Dragon
programs (``upstream_programs/``), run unchanged with ``dragon program.py``,
each by a launcher of its own in a subprocess with a deadline; the tests
check what they print. nox runs this module with plain pytest, outside the
launcher of the rest of the suite."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).parent / "upstream_programs"
DEADLINE = 900  # seconds per program, on a loaded 2-core box
MARK = "RHAPSODY_DRAGON_UPSTREAM_TEST"


def _launch(name: str, cwd: Path) -> list[str]:
    mark = uuid.uuid4().hex
    venv_bin = os.path.dirname(sys.executable)
    keep = {"DRAGON_DEFAULT_SEG_SZ", "DRAGON_INF_SEG_SZ"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAGON_") or k in keep}  # not attached to this run's runtime
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env[MARK] = mark
    proc = subprocess.Popen(
        [os.path.join(venv_bin, "dragon"), str(PROGRAMS / f"{name}.py")],
        cwd=cwd,  # the launcher writes its runtime files here
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # not start_new_session: a launcher that leads a session of its own hung before starting
        # anything (Dragon 0.15; as a child of `setsid` it runs). On a timeout, every process
        # carrying this run's mark is killed instead of a process group.
    )
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        _kill_marked(mark)
        out, err = proc.communicate()
        pytest.fail(f"{name} did not end within {DEADLINE} s\nstdout:\n{out}\nstderr:\n{err[-4000:]}")
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err[-4000:]}"
    assert "never retrieved" not in err, err[-3000:]
    return _program_lines(out)


def _program_lines(out: str) -> list[str]:
    """The program's own lines: without the launcher's ``+++ head proc`` line
    and its ``warning: N leftover files in /dev/shm:`` list (at exit it lists
    every file there, other users' too: a shared machine has some)."""
    lines, skip = [], 0
    for line in out.splitlines():
        if skip:
            skip -= 1
        elif m := re.match(r"warning: (\d+) leftover files in /dev/shm", line):
            skip = int(m.group(1))
        elif not line.startswith("+++ head proc"):
            lines.append(line)
    return lines


def _kill_marked(mark: str) -> None:
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


def test_heterogeneous_v3_example_shape(tmp_path: Path) -> None:
    lines = _launch("heterogeneous", tmp_path)
    assert lines[:6] == [
        "Submitted 5 tasks. Received 5 futures.",
        "DONE 42",
        "DONE 'single exe'",
        "DONE 'job'",
        lines[4],  # (pid of the task's own process, 'fn')
        "DONE 'fnjob'",
    ], lines
    state, pid, stage = lines[4].replace("(", " ").replace(")", " ").replace(",", " ").split()
    assert state == "DONE" and pid.isdigit() and stage == "'fn'", lines[4]
    assert lines[6:] == ["big job ResourceError"], lines


def test_batch_kwargs_create_dict_tasks_timeout_fence_and_ddict(tmp_path: Path) -> None:
    lines = _launch("batch_kwargs_create_and_fence", tmp_path)
    assert lines == [
        "sq.0 DONE 0 squaring 0",
        "sq.1 DONE 1 squaring 1",
        "sq.2 DONE 4 squaring 2",
        "sq.3 DONE 9 squaring 3",
        "echo DONE None from dragon",
        "timed out with TimeoutError",
        "ddict 14",
        lines[-1],
    ], lines
    _, reported, _, _, seen = lines[-1].split()  # "gpus N dragon sees M": capacity() says what Dragon's nodes say
    assert reported == seen and reported.isdigit(), lines[-1]
