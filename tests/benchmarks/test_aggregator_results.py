"""``python -m benchmarks`` gathers every engine's rows into its results
folder, also the default one (a relative path: the engines' children run
inside that folder, and once wrote their rows to a copy of the path below it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_default_results_folder_gets_the_rows(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RHAPSODY_WORK_DIR", None)
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--engines", "concurrent", "--workloads", "noop"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (folder,) = (tmp_path / "rhapsody-work").iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == {"concurrent": "ok"}
    rows = results["results"]
    assert rows and {r["workload"] for r in rows} == {"noop"} and {r["engine"] for r in rows} == {"concurrent"}
    assert "noop" in (folder / "results.txt").read_text()
    assert not (folder / "rhapsody-work").exists()
