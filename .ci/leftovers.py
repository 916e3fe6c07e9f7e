"""What a test run left behind: processes, listening ports, /dev/shm entries
and /tmp entries that appeared after the snapshot and are still there.

    python3 .ci/leftovers.py snapshot FILE     before the run
    python3 .ci/leftovers.py check FILE        after it: lists leftovers, exit 1 if any

``check`` gives stragglers up to LEFTOVER_GRACE seconds (default 30) to go
away on their own before it reports them. A process counts as the run's when
it carries the run's mark (``RHAPSODY_CI_RUN`` in its environment, which
every process the run starts inherits): what else runs on the machine is not
ours to judge. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

GRACE = float(os.environ.get("LEFTOVER_GRACE", "30"))
MARK = "RHAPSODY_CI_RUN"
# /tmp names our engines, tests and benchmarks create; another new /tmp entry is
# reported but does not fail the run (something else on the machine may own it)
OURS_IN_TMP = ("rp.", "rp_agent", "rhapsody", "dask-", "pytest-of-", "ddict_orc", "bench-", "dragon", ".dragon", "radical")


def _boot_ticks_now() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK")


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _processes_since(ticks: float, mark: bytes) -> list[str]:
    found, mine = [], _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        state, start = fields[0], float(fields[19])
        if start > ticks and state != "Z" and mark in environ.split(b"\0"):
            found.append(f"pid {entry.name}: {cmdline[:200]}")
    return found


def _listening() -> set[str]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A":  # LISTEN
                ports.add(parts[1])
    return ports


def _entries(folder: str) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def snapshot(path: Path) -> None:
    state = {
        "ticks": _boot_ticks_now(),
        "mark": os.environ.get(MARK, ""),
        "ports": sorted(_listening()),
        "shm": sorted(_entries("/dev/shm")),
        "tmp": sorted(_entries("/tmp")),
    }
    path.write_text(json.dumps(state))


def _leftovers(state: dict) -> list[str]:
    found = _processes_since(state["ticks"], f"{MARK}={state['mark']}".encode())
    for addr in sorted(_listening() - set(state["ports"])):
        host, port = addr.rsplit(":", 1)
        found.append(f"listening port {int(port, 16)} ({host})")
    found += [f"/dev/shm/{name}" for name in sorted(_entries("/dev/shm") - set(state["shm"]))]
    found += [f"/tmp/{name}" for name in sorted(_entries("/tmp") - set(state["tmp"])) if _ours(name)]
    return found


def _ours(name: str) -> bool:
    return name.startswith(OURS_IN_TMP) or name.endswith(".nodelist")


def _others_in_tmp(state: dict) -> list[str]:
    return [f"/tmp/{name}" for name in sorted(_entries("/tmp") - set(state["tmp"])) if not _ours(name)]


def check(path: Path) -> int:
    state = json.loads(path.read_text())
    deadline = time.monotonic() + GRACE
    found = _leftovers(state)
    while found and time.monotonic() < deadline:
        time.sleep(1)
        found = _leftovers(state)
    others = _others_in_tmp(state)
    if others:
        print(f"leftovers: new in /tmp, not known as ours (not counted): {', '.join(others)}")
    if not found:
        print("leftovers: none (no process, listening port, /dev/shm or /tmp entry of the run remains)")
        return 0
    print(f"leftovers: {len(found)} things the run left behind:")
    for line in found:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("snapshot", "check"):
        sys.exit(__doc__)
    sys.exit(snapshot(Path(sys.argv[2])) if sys.argv[1] == "snapshot" else check(Path(sys.argv[2])))
