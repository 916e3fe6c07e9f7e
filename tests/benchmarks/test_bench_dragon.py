from pathlib import Path

from tests.benchmarks.quick import check_rows, run_quick


def test_quick_benchmark_runs_and_reports_sane_figures(tmp_path: Path) -> None:
    # Started outside this launcher's runtime: the benchmark brings up its own.
    rows = run_quick("bench_dragon", tmp_path, timeout=900, drop_env="DRAGON_")
    check_rows(rows, {"fn_v2", "exe_v2", "fn_v1", "exe_v1", "fn_v3", "exe_v3"})
