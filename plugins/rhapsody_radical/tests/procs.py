"""Process-group inspection shared by the tests: what a pilot leaves behind."""

from __future__ import annotations

import os
import time

import psutil

from rhapsody_radical.environment import processes_of


def group_members() -> set[int]:
    """Live (non-zombie) processes in this test run's process group, except this one."""
    pgid, me = os.getpgid(0), os.getpid()
    found = set()
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.pid != me and os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def describe(pids: set[int] | list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())[:160]}")
        except psutil.Error:
            out.append(f"{pid}: <gone>")
    return out


def assert_nothing_left(baseline: set[int], sid: str | None, timeout: float = 30.0) -> None:
    """Every process that joined our process group since ``baseline``, and
    every process anywhere that belongs to RP session ``sid``, is gone."""
    deadline = time.monotonic() + timeout
    while True:
        extra = group_members() - baseline
        rp_left = [p for p in processes_of(sid) if psutil.Process(p).status() != psutil.STATUS_ZOMBIE] if sid else []
        if not extra and not rp_left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: group {describe(extra)}; session {sid}: {describe(rp_left)}")
        time.sleep(0.5)
