from pathlib import Path

from tests.benchmarks.quick import check_rows, run_quick


def test_quick_benchmark_runs_and_reports_sane_figures(tmp_path: Path) -> None:
    rows = run_quick("bench_concurrent", tmp_path)
    check_rows(rows, {"noop", "true", "stdout_1mb", "mixed", "latency", "burst"})
    burst = next(r for r in rows if r["workload"] == "burst" and r["variant"] == "rhapsody")
    assert burst["submit_s"] > 0 and burst["rss_growth_mb"] >= 0
