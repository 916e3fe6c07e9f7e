from pathlib import Path

from tests.benchmarks.quick import check_rows, run_quick


def test_quick_benchmark_runs_and_reports_sane_figures(tmp_path: Path) -> None:
    rows = run_quick("bench_dask", tmp_path)
    check_rows(rows, {"noop_functions"}, variants={"raw", "raw-map", "rhapsody"})
