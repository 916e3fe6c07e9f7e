"""Kill-and-resume on the Dask backend (its own LocalCluster, whose worker processes die with the driver): a driver running 2,000 journaled
tasks is killed with SIGKILL mid-run and run again (real processes, real kill)."""

from __future__ import annotations

from pathlib import Path

from rhapsody.testing.resume import kill_and_resume


def test_sigkilled_driver_resumes_without_loss_or_rerun(tmp_path: Path) -> None:
    figures = kill_and_resume("dask", tmp_path, n=2000)
    print(figures)
    assert figures["restored"] >= 400
