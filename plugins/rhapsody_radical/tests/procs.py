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


def pilot_agent(sid: str, timeout: float = 30.0) -> psutil.Process:
    """The agent_0 process of RP session ``sid``: the child of the pilot's
    ``bootstrap_0.sh`` shell that runs ``radical-pilot-agent_0`` (it renames
    itself ``rp.agent.0``)."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in psutil.process_iter():
            try:
                argv = proc.cmdline()
                if not any(a.endswith("/bootstrap_0.sh") for a in argv) or sid not in argv or "single_launch" in " ".join(argv):
                    continue
                for child in proc.children():
                    title = " ".join(child.cmdline())
                    if "radical-pilot-agent_0" in title or title.strip() == "rp.agent.0":
                        return child
            except psutil.Error:
                continue
        if time.monotonic() > deadline:
            raise AssertionError(f"no agent_0 process found for RP session {sid}")
        time.sleep(0.5)


def raptor_processes(sid: str, role: str = "worker") -> list[psutil.Process]:
    """The raptor ``role`` ("worker" or "master") processes of RP session
    ``sid`` (not the processes they fork, which carry the same command line)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if any(f"radical-pilot-raptor-{role}" in a for a in proc.cmdline()) and proc.environ().get("RP_SESSION_ID") == sid:
                found.append(proc)
        except psutil.Error:
            continue
    pids = {p.pid for p in found}
    return [p for p in found if p.ppid() not in pids]
