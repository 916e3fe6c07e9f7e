"""Kill-and-resume on the concurrent backend: a driver running 2,000 journaled
tasks is killed with SIGKILL mid-run and run again (real processes, real kill)."""

from __future__ import annotations

from pathlib import Path

from rhapsody.testing.resume import kill_and_resume


def test_sigkilled_driver_resumes_without_loss_or_rerun(tmp_path: Path) -> None:
    figures = kill_and_resume("concurrent", tmp_path, n=2000)
    print(figures)
    assert figures["restored"] >= 400
