"""``python -m benchmarks`` killed mid-run (SIGTERM, SIGINT) or timing out an
engine run leaves none of the engine's processes behind.

Real runs, real engine processes: the aggregator runs the benchmark of the
engine installed in this component (Dask: its LocalCluster starts nanny and
worker processes; Dragon: the launcher starts its runtime, which leaves the
aggregator's process groups), and is killed once those grandchildren exist. Every process of the run inherits
a mark of this test's own in its environment, whatever session or process
group it puts itself in, so the test finds them without relying on the code
under test. Nor may the killed processes' shared memory stay in ``/dev/shm``
(Dragon's pools, the semaphores of Dask's nannies).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_MARK = "RHAPSODY_TEST_CLEANUP_MARK"
#: seconds the engine's processes may take to appear on a loaded machine
APPEAR_DEADLINE = 300.0
#: seconds the aggregator may take to stop everything and exit (its grace is 10 s, its sweep 30 s)
EXIT_DEADLINE = 120.0


def _marked(mark: str) -> list[int]:
    needle = f"{TEST_MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _parent(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm"))


def _bench_dirs_in_tmp() -> set[str]:
    """The benchmarks' own scratch folders in the system temp folder."""
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(("bench-", "rhapsody-bench-"))}


def _left_in_shm(before: set[str]) -> set[str]:
    """Entries new since ``before`` that no live process maps: leaked, not
    merely in use by something else running on the machine meanwhile."""
    new, held = _shm() - before, set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            maps = (entry / "maps").read_text() if entry.name.isdigit() else ""
            held.update(name for name in new if f"/dev/shm/{name}" in maps)
    return new - held


def _engine() -> str:
    for engine in ("dask", "dragon"):
        if importlib.util.find_spec(f"rhapsody_{engine}") is not None:
            return engine
    pytest.fail("neither rhapsody-dask nor rhapsody-dragon is installed: this test needs a real engine")


ENGINE = _engine()
# far more work than fits before the kill: the run is mid-way when the signal comes
LONG_RUN = {
    "dask": ("--quick", "--workloads", "true", "--n-true", "100000"),
    "dragon": ("--quick", "--workloads", "exe_v2", "--n-exe", "100000"),
}[ENGINE]


def _start(tmp_path: Path, mark: str, *extra: str) -> subprocess.Popen[bytes]:
    # run from inside a launched Dragon test session, the benchmark must bring up a runtime of its own
    env = {k: v for k, v in os.environ.items() if not (ENGINE == "dragon" and k.startswith("DRAGON_"))}
    env.update({TEST_MARK: mark, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if ENGINE == "dask":  # the killed workers' dask-scratch-space stays in this test's temp dir (Dragon: its own choice)
        scratch = tmp_path / "tmp"
        scratch.mkdir()
        env["TMPDIR"] = str(scratch)
    log = (tmp_path / "aggregator.log").open("wb")
    cmd = [sys.executable, "-m", "benchmarks", "--engines", ENGINE, "--out", str(tmp_path / "out"), *extra]
    # a session of its own: if the test fails, its own cleanup below can still find the group
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_grandchildren(proc: subprocess.Popen[bytes], mark: str) -> list[int]:
    """Marked processes that are neither the aggregator nor its direct child: the engine's own."""
    deadline = time.monotonic() + APPEAR_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the aggregator exited ({proc.returncode}) before the engine's processes appeared")
        children = {pid for pid in _marked(mark) if _parent(pid) == proc.pid}
        deeper = [pid for pid in _marked(mark) if pid != proc.pid and pid not in children]
        if deeper:
            return deeper
        time.sleep(0.2)
    pytest.fail(f"no engine process of the benchmark appeared within {APPEAR_DEADLINE:g} s")


def _cleanup(proc: subprocess.Popen[bytes], mark: str) -> None:
    """Whatever the outcome, this test leaves nothing behind itself."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in _marked(mark):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def _log(tmp_path: Path) -> str:
    return (tmp_path / "aggregator.log").read_text(errors="replace")[-3000:]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)])
def test_killed_aggregator_takes_the_engine_processes_with_it(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    mark, shm_before, tmp_before = uuid.uuid4().hex, _shm(), _bench_dirs_in_tmp()
    proc = _start(tmp_path, mark, *LONG_RUN)
    try:
        engine_pids = _wait_for_grandchildren(proc, mark)
        os.kill(proc.pid, sig)  # the aggregator alone, as a user's Ctrl-C / a batch system's kill would
        try:
            proc.wait(timeout=EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the aggregator did not exit within {EXIT_DEADLINE:g} s of {sig.name}\n{_log(tmp_path)}")
        left = _marked(mark)
        assert left == [], f"after {sig.name} these processes of the run remain: {left} (engine pids were {engine_pids})\n{_log(tmp_path)}"
        assert proc.returncode == code, _log(tmp_path)
        assert _left_in_shm(shm_before) == set(), "the killed engine's shared memory was left in /dev/shm"
        assert _bench_dirs_in_tmp() - tmp_before == set(), "the killed benchmark's scratch folder was left in the temp folder"
    finally:
        _cleanup(proc, mark)


def test_engine_run_timing_out_leaves_nothing(tmp_path: Path) -> None:
    mark, shm_before, tmp_before = uuid.uuid4().hex, _shm(), _bench_dirs_in_tmp()
    proc = _start(tmp_path, mark, *LONG_RUN, "--timeout", "90")
    try:
        _wait_for_grandchildren(proc, mark)
        try:
            proc.wait(timeout=90 + EXIT_DEADLINE + APPEAR_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the aggregator did not end after its engine run timed out\n{_log(tmp_path)}")
        left = _marked(mark)
        assert left == [], f"after the timeout these processes of the run remain: {left}\n{_log(tmp_path)}"
        assert f"{ENGINE}: killed after 90 s (--timeout)" in _log(tmp_path)
        assert _left_in_shm(shm_before) == set(), "the killed engine's shared memory was left in /dev/shm"
        assert _bench_dirs_in_tmp() - tmp_before == set(), "the killed benchmark's scratch folder was left in the temp folder"
    finally:
        _cleanup(proc, mark)
