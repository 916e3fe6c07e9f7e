"""Kill-and-resume check: a driver process running a journaled workload is
killed with SIGKILL mid-run (every process it started must then go away by
itself), then run again with the same journal. Used by the core (concurrent) and the
Dask test suites with their real engines."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rhapsody.engine.scratch import AFTERMATH
from rhapsody.testing.waiting import left_in

#: seconds one whole run of the driver may take on a loaded 2-core machine
RUN_DEADLINE = 600.0


def _start(backend: str, journal: Path, markers: Path, results: Path, n: int, run_id: str, work: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RHAPSODY_TEST_RUN": run_id,
        "RHAPSODY_TEST_SLEEP": "0.01",
        "RHAPSODY_WORK_DIR": str(work),
        "TMPDIR": str(_temp_of(work)),  # its own: what it leaves there is seen
    }
    argv = [sys.executable, "-m", "rhapsody.testing.resume_driver", backend, str(journal), str(markers), str(results), str(n)]
    log = open(work / f"driver-{run_id}.log", "wb")  # noqa: SIM115 - closed by the child's exit; read on failure
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=work)


def _temp_of(work: Path) -> Path:
    temp = work.parent / "driver-tmp"
    temp.mkdir(exist_ok=True)
    return temp


def _finish(proc: subprocess.Popen[bytes], work: Path, run_id: str) -> None:
    try:
        code = proc.wait(RUN_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        raise AssertionError(f"driver run {run_id} did not end within {RUN_DEADLINE:g} s") from None
    log = (work / f"driver-{run_id}.log").read_text(errors="replace")
    assert code == 0, f"driver run {run_id} exited with {code}:\n{log[-4000:]}"
    left = left_in(_temp_of(work), 5.0)
    assert not left, f"driver run {run_id} left these in its temp folder: {left}"


def done_in_journal(journal: Path) -> dict[str, str]:
    """key -> description of every task the journal holds as DONE (read-only, while a run writes)."""
    if not journal.exists():
        return {}
    conn = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return dict(conn.execute("SELECT key, description FROM tasks WHERE state = 'DONE'").fetchall())
    except sqlite3.OperationalError:  # the tables are not there yet
        return {}
    finally:
        conn.close()


def _index(key: str, description: str) -> int:
    """The task's number: from its uid (``exe-<i>``) or its first argument (``args=(<i>,...``)."""
    if key.startswith("uid:exe-"):
        return int(key.split("-")[1])
    found = re.search(r"^args=\((\d+),", description, re.MULTILINE)
    assert found, description
    return int(found.group(1))


def _group_gone(pgid: int, deadline: float = 120.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)  # not left behind, but the test fails
    raise AssertionError(f"processes the killed driver started (group {pgid}) were still alive {deadline:g} s after it died")


def kill_and_resume(backend: str, tmp: Path, n: int = 2000) -> dict[str, Any]:
    """Run the check; raises AssertionError naming what went wrong. Returns figures for the test to report."""
    work = tmp / "work"
    work.mkdir()
    # 1. the reference: one uninterrupted run
    ref_markers, ref_results = tmp / "ref-markers", tmp / "ref.json"
    ref_markers.mkdir()
    _finish(_start(backend, tmp / "ref.db", ref_markers, ref_results, n, "ref", work), work, "ref")
    reference = json.loads(ref_results.read_text())
    assert reference["restored"] == 0
    # 2. the run that is killed: once a fifth of the tasks are DONE in its journal
    journal, markers, results = tmp / "run.db", tmp / "markers", tmp / "results.json"
    markers.mkdir()
    first = _start(backend, journal, markers, results, n, "1", work)
    t0 = time.monotonic()
    while len(done_in_journal(journal)) < n // 5:
        assert first.poll() is None, f"the driver ended (code {first.returncode}) before it could be killed"
        assert time.monotonic() - t0 < RUN_DEADLINE, f"{n // 5} tasks were not DONE within {RUN_DEADLINE:g} s"
        time.sleep(0.05)
    # SIGKILL the driver alone, as a batch system or the OOM killer does: what it
    # started (engine workers, multiprocessing's resource tracker, which then
    # removes the semaphores the driver left) must go away by itself
    os.kill(first.pid, signal.SIGKILL)
    first.wait(60)
    _group_gone(first.pid)
    left = left_in(_temp_of(work), AFTERMATH + 10)  # an engine's scratch folder: removed by its guard
    assert not left, f"the killed driver left these in its temp folder: {left}"
    done_before = done_in_journal(journal)
    assert n // 5 <= len(done_before) < n, f"{len(done_before)} of {n} DONE when killed: not mid-run"
    assert not results.exists()
    # 3. the rerun, to its end
    _finish(_start(backend, journal, markers, results, n, "2", work), work, "2")
    rerun = json.loads(results.read_text())
    # zero lost, same results as uninterrupted
    assert [row[0] for row in rerun["tasks"]] == ["DONE"] * n, "tasks lost or failed on the rerun"
    assert rerun["tasks"] == reference["tasks"], "the resumed results differ from the uninterrupted run's"
    assert rerun["restored"] == len(done_before)
    # zero DONE tasks run twice: what the journal held as DONE never ran in run 2; everything ran
    runs = {i: (markers / str(i)).read_text().split() for i in range(n) if (markers / str(i)).exists()}
    assert len(runs) == n, f"{n - len(runs)} tasks never ran"
    done_indices = {_index(k, d) for k, d in done_before.items()}
    rerun_of_done = sorted(i for i in done_indices if "2" in runs[i])
    assert not rerun_of_done, f"{len(rerun_of_done)} tasks DONE in the journal ran again, e.g. {rerun_of_done[:5]}"
    assert all(runs[i] == ["1"] for i in done_indices), "a task DONE in run 1 has marks of other runs"
    not_done = [i for i in range(n) if i not in done_indices and "2" not in runs[i]]
    assert not not_done, f"{len(not_done)} tasks not DONE at the kill did not run again, e.g. {not_done[:5]}"
    twice = [i for i in range(n) if len(runs[i]) > 1]  # in flight at the kill: ran again, never DONE twice in the journal
    return {"done_before_kill": len(done_before), "ran_again_in_flight": len(twice), "restored": rerun["restored"]}
