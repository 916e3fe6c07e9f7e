"""The inference benchmark runs end to end (its own llama.cpp server, both
variants, both concurrencies) and reports sane figures. Speed is not judged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_inference_benchmark_reports_both_variants(tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_inference",
        "--requests",
        "4",
        "--concurrency",
        "1",
        "2",
        "--rounds",
        "1",
        "--json",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, start_new_session=True)
    assert proc.returncode == 0, f"benchmark exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["variant"], r["concurrency"]) for r in rows} == {(v, c) for v in ("openai-direct", "rhapsody") for c in (1, 2)}
    for r in rows:
        assert r["requests"] == 4 and r["requests_per_s"] > 0, r
        assert 0 < r["p50_s"] <= r["p95_s"], r
        assert r["completion_tokens"] > 0 and r["client_cpu_ms_per_request"] > 0, r
    assert "| rhapsody |" in proc.stdout and "| openai-direct |" in proc.stdout
