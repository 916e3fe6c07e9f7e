from pathlib import Path

from tests.benchmarks.quick import check_rows, run_quick


def test_quick_benchmark_runs_and_reports_sane_figures(tmp_path: Path) -> None:
    rows = run_quick("bench_radical", tmp_path, timeout=900)
    check_rows(rows, {"first_task", "true", "stdout_1mb", "mixed", "latency"})
