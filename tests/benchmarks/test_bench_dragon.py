from pathlib import Path

from tests.benchmarks.quick import check_rows, run_quick

WORKLOADS = {f"{kind}_{v}" for kind in ("fn", "exe", "stdout", "mixed", "latency") for v in ("v2", "v1")} | {"fn_v3", "exe_v3"}


def test_quick_benchmark_runs_and_reports_sane_figures(tmp_path: Path) -> None:
    # Started outside this launcher's runtime: the benchmark re-runs itself under a
    # `dragon` launcher of its own (Dragon's native Pool needs a launched client).
    rows = run_quick("bench_dragon", tmp_path, timeout=900, drop_env="DRAGON_")
    check_rows(rows, WORKLOADS)
