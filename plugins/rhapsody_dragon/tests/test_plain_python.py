"""Dragon without the launcher: a plain ``python`` program (the venv's
interpreter, the venv not activated) starts, stops and starts again V1, V2
and V3 backends in one process, in every order between two of them, and
leaves no process or /dev/shm segment of its own behind when it exits, also
with a backend still open, or when it is killed. Each program runs in a
subprocess with a deadline; this suite may itself run under the launcher (the
child is detached from it)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PROGRAM = Path(__file__).parent / "programs" / "restart_backends.py"
SAMPLING_PROGRAM = Path(__file__).parent / "programs" / "sample_nodes.py"
DEADLINE = 900  # seconds per program, on a loaded 2-core box
GRACE = 30  # seconds for a stopped runtime's processes to be gone
MARK = "RHAPSODY_DRAGON_PLAIN_TEST"


def _plain_env(mark: str, attach_dir: Path) -> dict[str, str]:
    """A plain python process: no attachment to a runtime, the venv's bin/ not
    on PATH (Dragon's commands must still be found), a mark every process it
    starts inherits, and a folder of its own for its runtime's attach-info file
    (Dragon's default, <tmp>/dragon_<uid>, is shared by every runtime of the user)."""
    venv_bin = os.path.dirname(sys.executable)
    keep = {"DRAGON_DEFAULT_SEG_SZ", "DRAGON_INF_SEG_SZ"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAGON_") or k in keep}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(venv_bin)
    )
    env[MARK] = mark
    env["DRAGON_ATTACH_DIR"] = str(attach_dir)
    return env


def _marked_processes(mark: str) -> list[str]:
    found = []
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


def _kill_marked(mark: str) -> None:
    for line in _marked_processes(mark):
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except OSError:
            pass


def _run(tmp_path: Path, *args: str, program: Path = PROGRAM, code: int = 0) -> tuple[list[str], str, list[str], list[str]]:
    """Run ``program``; returns its stdout lines, its stderr, and what of it
    is left (processes, /dev/shm entries) once GRACE has passed. Its runtime's
    attach-info file must be gone by then too."""
    mark = uuid.uuid4().hex
    attach_dir = tmp_path / "dragon-attach"
    proc = subprocess.Popen(
        [sys.executable, str(program), *args],
        cwd=tmp_path,
        env=_plain_env(mark, attach_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _kill_marked(mark)
        out, err = proc.communicate()
        pytest.fail(f"the program did not end within {DEADLINE} s\nstdout:\n{out}\nstderr:\n{err[-4000:]}")
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err[-4000:]}"
    lines = out.splitlines()
    segments = next((line.split()[1:] for line in lines if line.startswith("SEGMENTS")), [])
    prefixes = {m.group(1) for s in segments if (m := re.match(r"/dev/shm/(DD\d+)", s))}
    deadline = time.monotonic() + GRACE
    while True:
        procs = _marked_processes(mark)
        shm = sorted(name for name in os.listdir("/dev/shm") if any(name.startswith(p) for p in prefixes))
        if not (procs or shm or attach_dir.exists()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    _kill_marked(mark)  # never leave them to the next test, whatever the assertions say
    assert prefixes, f"the program saw no runtime segments mapped: {lines}"
    assert not attach_dir.exists(), f"its runtime's attach-info folder was left: {sorted(attach_dir.iterdir())}"
    return lines, err, procs, shm


def test_v1_v2_v3_restart_in_any_order_and_leave_nothing(tmp_path: Path) -> None:
    lines, err, procs, shm = _run(tmp_path, "v1", "v2", "v3", "v1", "v3", "v2")
    runs = [line for line in lines if line.startswith("RUN")]
    assert runs == [f"RUN {i} {v} DONE {100 + i} exe-{i}" for i, v in enumerate(["v1", "v2", "v3", "v1", "v3", "v2"])], (lines, err[-3000:])
    assert lines[-1] == "END"
    assert not any("auth_token" in line for line in lines), "the runtime's attach token was printed"
    assert procs == [], f"processes of the program left running: {procs}"
    assert shm == [], f"/dev/shm segments of its runtime left: {shm}"


def test_exit_with_a_backend_still_open_stops_the_runtime(tmp_path: Path) -> None:
    """The transitions the first test lacks (v2->v1, v1->v3), then V3 left
    open at exit: its Batch's client threads must not hold the interpreter."""
    lines, err, procs, shm = _run(tmp_path, "v2", "v1", "v3", "--leave-open")
    runs = [line for line in lines if line.startswith(("RUN", "OPEN"))]
    assert runs == ["RUN 0 v2 DONE 100 exe-0", "RUN 1 v1 DONE 101 exe-1", "RUN 2 v3 DONE 102 exe-2", "OPEN v3 3"], (lines, err[-3000:])
    assert lines[-1] == "END"
    assert procs == [], f"processes of the program left running: {procs}"
    assert shm == [], f"/dev/shm segments of its runtime left: {shm}"


def test_each_node_is_sampled_by_a_process_placed_there(tmp_path: Path) -> None:
    """Telemetry's samples from a runtime the program started itself: one per
    node of ``System()``, named as ``task.worker`` names the host, read by a
    sampler process other than the program, which the backend's stop ends."""
    lines, err, procs, shm = _run(tmp_path, program=SAMPLING_PROGRAM)
    seen = {
        line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
        for line in lines
        if line.startswith(("NODES", "SAMPLES", "SAMPLERS", "LEFT"))
    }
    assert lines[-1] == "END", (lines, err[-3000:])
    nodes, rounds, samplers = seen["NODES"], seen["SAMPLES"], seen["SAMPLERS"]
    for samples in rounds:
        assert [s["node_id"] for s in samples if s["gpu_id"] is None] == [socket.gethostname()] * len(nodes), (samples, nodes)
        assert all(0 < s["memory_percent"] <= 100 for s in samples), samples
    assert all(s["cpu_percent"] is not None for s in rounds[1]), rounds
    assert len(samplers["samplers"]) == len(nodes) and samplers["me"] not in samplers["samplers"], samplers
    assert seen["LEFT"] == [], "sampler processes left after the backend stopped"
    assert procs == [], f"processes of the program left running: {procs}"
    assert shm == [], f"/dev/shm segments of its runtime left: {shm}"


def test_a_killed_program_takes_its_runtime_and_samplers_along(tmp_path: Path) -> None:
    """The program SIGKILLs itself with a backend open and its node samplers
    running: its runtime guard ends the runtime, so no process (runtime, pool
    worker, sampler, guard) and no /dev/shm segment of it is left."""
    lines, err, procs, shm = _run(tmp_path, "--die", program=SAMPLING_PROGRAM, code=-signal.SIGKILL)
    samplers = next(json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("SAMPLERS"))
    assert samplers["samplers"], (lines, err[-3000:])
    assert procs == [], f"processes of the killed program left running: {procs}"
    assert shm == [], f"/dev/shm segments of its runtime left: {shm}"
