from pathlib import Path

from tests.benchmarks.quick import check_rows, run_quick

WORKLOADS = {"noop_functions", "true", "stdout_1mb", "mixed", "latency"}


def test_quick_benchmark_runs_and_reports_sane_figures(tmp_path: Path) -> None:
    rows = run_quick("bench_dask", tmp_path, own_tmp=True)
    check_rows(rows, WORKLOADS)
    check_rows([r for r in rows if r["workload"] == "noop_functions"], {"noop_functions"}, variants={"raw", "raw-map", "rhapsody"})
    # --quick leaves the rhapsody-py column out on purpose, and says so rather than failing
    old = {r["workload"]: r for r in rows if r["variant"] == "rhapsody-py"}
    assert set(old) == WORKLOADS, sorted(old)
    assert all(r["skipped"] and r["error"] is None and not r["seconds"] for r in old.values()), old
