from __future__ import annotations

from pathlib import Path

from tests.benchmarks.quick import check_rows, run_quick

WORKLOADS = {"concurrent_noop", "dask_noop", "dask_true"}
VARIANTS = frozenset({"off", "telemetry", "telemetry+ckpt"})


def test_quick_telemetry_benchmark_runs_and_reports_sane_figures(tmp_path: Path) -> None:
    rows = run_quick("bench_telemetry", tmp_path, own_tmp=True)
    check_rows([r for r in rows if r["workload"] in WORKLOADS], WORKLOADS, VARIANTS)
    (long_run,) = [r for r in rows if r["workload"] == "long_run"]
    assert long_run["error"] is None and long_run["tasks_counted"] == long_run["n"]
    assert len(long_run["rss_mb_per_batch"]) == 5 and long_run["spans_kept"] <= 10_000
