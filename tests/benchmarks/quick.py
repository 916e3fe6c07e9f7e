"""Runs one engine's benchmark module in --quick mode and checks that what it
produced is sane: every workload measured for both RHAPSODY and the raw engine,
no variant failed, and the figures are positive numbers. Speed is not judged."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rhapsody.testing.waiting import left_in

ROOT = Path(__file__).resolve().parents[2]


def run_quick(
    module: str, tmp_path: Path, *extra: str, timeout: float = 600, drop_env: str | None = None, own_tmp: bool = False
) -> list[dict[str, Any]]:
    """``drop_env``: a prefix of environment variables the child must not inherit
    (e.g. ``DRAGON_`` so a benchmark started from a launched test run brings up
    a runtime of its own). ``own_tmp``: the child gets a ``TMPDIR`` of its own,
    which must be empty when it ends (not for engines whose Unix sockets
    would get too long a path there)."""
    out = tmp_path / "bench.jsonl"
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--quick", "--json", str(out), *extra]
    env = {k: v for k, v in os.environ.items() if not (drop_env and k.startswith(drop_env))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    temp = tmp_path / "tmp"
    if own_tmp:
        temp.mkdir()
        env["TMPDIR"] = str(temp)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    assert proc.returncode == 0, f"benchmark exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "vs raw" in proc.stdout, proc.stdout[-2000:]
    if own_tmp:
        left = left_in(temp)
        assert not left, f"benchmarks.{module} left these in its temp folder: {left}"
    return [json.loads(line) for line in out.read_text().splitlines()]


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
