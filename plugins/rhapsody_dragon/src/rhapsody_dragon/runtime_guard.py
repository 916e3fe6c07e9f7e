"""Ends a local Dragon runtime whose program died without stopping it.

A plain ``python`` program that starts Dragon's local runtime
(`rhapsody_dragon.local_runtime`) runs it in a session of its own: if the
program is killed (SIGKILL, OOM), the runtime, its head, the engines' worker
and sampler processes would live on, busy-waiting, with their /dev/shm
segments. This guard, a small process in a session of its own, holds the
read end of a pipe from the program: at EOF (the program's end, whatever
killed it) it kills the runtime's process group and removes its segments and
its attach-info file, unless the program first wrote ``stopped`` (it stopped
the runtime itself).

Run as ``python -m rhapsody_dragon.runtime_guard <launcher pid> <segment prefix>
[<attach-info file> <its sha256>]``; stdlib only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import time
from pathlib import Path

#: what the program writes before closing the pipe when it stopped the runtime itself
STOPPED = b"stopped"
#: seconds after SIGKILL for the runtime's processes to be gone
KILL_PATIENCE = 10.0


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def mapped_segments(pids: list[int]) -> set[Path]:
    """The /dev/shm files the processes ``pids`` have mapped."""
    found: set[Path] = set()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
        except OSError:
            continue
        found.update(Path(line.split()[-1]) for line in lines if " /dev/shm/" in line)
    return found


def attach_record(path: str) -> tuple[str, str] | None:
    """``(path, sha256 of its content)`` of a runtime's attach-info file; None if there is none."""
    try:
        return path, hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def remove_attach_info(record: tuple[str, str]) -> None:
    """Dragon's Local Services writes ``<tmp>/dragon_<uid>/attach_info.txt`` at
    start and removes it (and the folder) when it shuts down, not when it is
    killed. Remove the file if it still is the one `attach_record` saw (that
    folder is per user, not per runtime: another runtime's is left alone),
    then the folder once empty."""
    path = record[0]
    if attach_record(path) == record:
        with contextlib.suppress(OSError):
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))  # only if empty


def end_runtime(pgid: int, prefix: str, attach: tuple[str, str] | None = None) -> None:
    """SIGKILL the group, wait for it, and remove its segments: those named
    ``<prefix>*`` and those its processes had mapped (Dragon names some pools
    otherwise, e.g. a Batch's dictionaries); and its attach-info file, given
    its `attach_record`. Never the caller's own group."""
    if pgid <= 1 or pgid == os.getpgid(0):
        return
    members = group_members(pgid)
    segments = mapped_segments(members)
    if members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_PATIENCE
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if prefix.startswith("DD"):  # never a wider pattern
        segments.update(Path("/dev/shm").glob(f"{prefix}*"))
    for path in segments:
        with contextlib.suppress(OSError):
            path.unlink()
    if attach is not None:
        remove_attach_info(attach)


def main(argv: list[str]) -> None:
    pgid, prefix = int(argv[0]), argv[1]
    attach = (argv[2], argv[3]) if len(argv) >= 4 else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C for the program is not for its guard
    said = sys.stdin.buffer.read()  # returns when the program's end of the pipe closes
    if said != STOPPED:
        end_runtime(pgid, prefix, attach)


if __name__ == "__main__":
    main(sys.argv[1:])
