"""Runs one engine's benchmark module in --quick mode and checks that what it
produced is sane: every workload measured for both RHAPSODY and the raw engine,
no variant failed, and the figures are positive numbers. Speed is not judged."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import children
from benchmarks.common import SCRATCH_VARIABLE
from rhapsody.testing.waiting import left_in

ROOT = Path(__file__).resolve().parents[2]


def run_quick(
    module: str, tmp_path: Path, *extra: str, timeout: float = 600, drop_env: str | None = None, own_tmp: bool = False
) -> list[dict[str, Any]]:
    """``drop_env``: a prefix of environment variables the child must not inherit
    (e.g. ``DRAGON_`` so a benchmark started from a launched test run brings up
    a runtime of its own). ``own_tmp``: the child gets a ``TMPDIR`` of its own,
    which must be empty when it ends (not for engines whose Unix sockets
    would get too long a path there).

    Whatever happens (the benchmark ends, fails or overruns ``timeout``), every
    process it started is stopped, and the shared memory and scratch folders
    they left are removed (`benchmarks.children`, `benchmarks.common.scratch_dir`):
    a Dragon launcher puts itself in a session of its own, so killing the child
    alone would leave it and its runtime running."""
    out = tmp_path / "bench.jsonl"
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--quick", "--json", str(out), *extra]
    env = {k: v for k, v in os.environ.items() if not (drop_env and k.startswith(drop_env))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    temp = tmp_path / "tmp"
    if own_tmp:
        temp.mkdir()
        env["TMPDIR"] = str(temp)
    mark = f"quick-{os.getpid()}-{module}"
    env[children.MARK_VARIABLE] = mark
    scratch = tempfile.mkdtemp(prefix="bench-scratch-")  # short: engines put sockets below it
    env[SCRATCH_VARIABLE] = scratch
    shm_before = children.shm_entries()
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    overran = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        stray = _still_running(mark)
    except subprocess.TimeoutExpired:
        overran = True
    finally:
        children.stop(proc, mark, shm_before)
        shutil.rmtree(scratch, ignore_errors=True)
    if overran:
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"benchmarks.{module} had not ended after {timeout:g} s (stopped)\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
        )
    assert not stray, f"benchmarks.{module} ended but left processes running (now stopped): {stray}"
    assert proc.returncode == 0, f"benchmark exited {proc.returncode}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    assert "vs raw" in stdout, stdout[-2000:]
    if own_tmp:
        left = left_in(temp)
        assert not left, f"benchmarks.{module} left these in its temp folder: {left}"
    return [json.loads(line) for line in out.read_text().splitlines()]


def _still_running(mark: str, grace: float = 10.0) -> list[str]:
    """Command lines of the processes started under ``mark`` that are still
    running ``grace`` seconds after the benchmark ended."""
    deadline = time.monotonic() + grace
    while (pids := children.marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [_cmdline(pid) for pid in pids]


def _cmdline(pid: int) -> str:
    try:
        return f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return f"{pid}: (ended)"


def check_rows(rows: list[dict[str, Any]], workloads: set[str], variants: set[str] = frozenset({"raw", "rhapsody"})) -> None:
    seen = {(r["workload"], r["variant"]) for r in rows}
    missing = {(w, v) for w in workloads for v in variants} - seen
    assert not missing, f"not measured: {sorted(missing)}"
    for r in rows:
        if r["variant"] not in variants:
            continue  # an optional third column (e.g. rhapsody-py) may report its own failure
        assert r["error"] is None, f"{r['workload']}/{r['variant']} failed: {r['error']}"
        assert r["n"] > 0 and r["seconds"], r
        assert all(s > 0 and math.isfinite(s) for s in r["seconds"]), r
        assert r["tasks_per_s"] > 0, r
