from pathlib import Path

from tests.benchmarks.quick import check_rows, run_quick

WORKLOADS = {"noop", "true", "stdout_1mb", "mixed", "latency", "burst"}
HOT = {"hot_noop", "hot_noop_100k", "hot_roundtrip"}  # raw / rhapsody / rhapsody-py on one 8-thread pool


def test_quick_benchmark_runs_and_reports_sane_figures(tmp_path: Path) -> None:
    rows = run_quick("bench_concurrent", tmp_path)
    check_rows(rows, WORKLOADS | HOT)
    check_rows(rows, {"noop_backend"}, variants={"rhapsody"})  # RHAPSODY's own cost: nothing to compare with
    check_rows(rows, {"journal"}, variants={"rhapsody", "journal", "journal-uid"})
    journaled = [r for r in rows if r["workload"] == "journal" and r["variant"].startswith("journal")]
    assert all(r["vs_no_journal"] > 0 for r in journaled), journaled
    hot = [r for r in rows if r["workload"] in HOT | {"noop_backend"} and r["variant"] in ("raw", "rhapsody")]
    assert hot and all(r["cpu_us"] > 0 and len(r["gc_collections"]) == 3 for r in hot), hot  # where #16's bar is read
    burst = next(r for r in rows if r["workload"] == "burst" and r["variant"] == "rhapsody")
    assert burst["submit_s"] > 0 and burst["rss_growth_mb"] >= 0
    # --quick leaves the rhapsody-py column out on purpose, and says so rather than failing
    old = {r["workload"]: r for r in rows if r["variant"] == "rhapsody-py"}
    assert set(old) == WORKLOADS | HOT, sorted(old)
    assert all(r["skipped"] and r["error"] is None and not r["seconds"] for r in old.values()), old
