"""Child processes that die with the command that started them.

An engine run leaves helpers behind unless they are stopped on purpose: Dask
nannies and workers, RADICAL-Pilot agents and bridges, and the Dragon launcher
with its runtime, which puts itself into a session of its own (``setsid``) so
that killing our child's process group misses it. Three things make sure
nothing outlives the command, also when it is killed (SIGTERM, SIGINT, SIGHUP)
or an engine run times out:

- every child gets a mark in its environment (``RHAPSODY_RUN_MARK``), which the
  processes it starts inherit whatever session or group they put themselves in;
- this process becomes a child subreaper (Linux ``prctl``), so orphans of our
  children are re-parented to us rather than to init, and we can reap them;
- SIGTERM and SIGHUP raise `Terminated` (SIGINT raises KeyboardInterrupt), so
  the ``finally`` blocks that stop the children run.

A SIGKILL of this process cannot be caught: then the children get
``PR_SET_PDEATHSIG`` (the direct child only; its own children are the engine's).

Killed engine processes cannot unlink their shared memory: Dragon's pools
(``/dev/shm/DD*``) and the named semaphores of Python's multiprocessing
(``/dev/shm/sem.mp-*``, used by Dask's nannies) stay behind. `stop` removes the
``/dev/shm`` entries that appeared during the run and no live process holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

MARK_VARIABLE = "RHAPSODY_RUN_MARK"
#: seconds a child may take to stop after SIGTERM before everything marked is killed
GRACE = 10.0
#: seconds the sweep may take before it gives up naming what is left
SWEEP_DEADLINE = 30.0
SHM = Path("/dev/shm")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


class Terminated(BaseException):
    """This command got SIGTERM or SIGHUP; ``finally`` blocks stop its children on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


class LeftBehind(RuntimeError):
    """Processes of a run survived SIGKILL (e.g. stuck in uninterruptible sleep)."""


try:  # loaded here, not in a forked child (``preexec_fn`` must not load libraries)
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
    _LIBC.prctl  # noqa: B018 - present on Linux only
except (OSError, AttributeError):
    _LIBC = None


def _prctl(option: int, value: int) -> bool:
    if _LIBC is None:  # not Linux: the mark and the group still work
        return False
    return int(_LIBC.prctl(option, value, 0, 0, 0)) == 0


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def take_charge() -> str:
    """Call once, in the main thread, before starting children: returns the
    mark to put into their environment (`MARK_VARIABLE`)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
    return f"{os.getpid()}-{time.time_ns()}"


def die_with_parent() -> None:
    """``preexec_fn`` for a child: SIGKILL it when this process dies, whatever the cause."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def marked(mark: str) -> list[int]:
    """Pids of live processes carrying ``mark`` in their environment (ours only:
    another user's environment cannot be read)."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _reap() -> None:
    """Collect exited children, ours or adopted ones (we are their subreaper)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def shm_entries() -> set[str]:
    """Names in ``/dev/shm`` owned by this user: take them before starting a child, for `stop`."""
    names = set()
    with contextlib.suppress(OSError):
        for entry in SHM.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == os.getuid():
                    names.add(entry.name)
    return names


def _shm_in_use() -> set[str]:
    """Names in ``/dev/shm`` that a live process has mapped or open (ours: others' are unreadable)."""
    used, prefix = set(), f"{SHM}/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (entry / "maps").read_text().splitlines():
                _, found, rest = line.partition(prefix)
                if found:
                    used.add(rest.split(" ")[0])
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith(prefix):
                        used.add(target[len(prefix) :].split(" ")[0])
    return used


def remove_orphaned_shm(before: set[str]) -> list[str]:
    """Unlink the ``/dev/shm`` entries of ours that are not in ``before`` and
    that no live process holds: what the run's killed processes left. Returns their names."""
    orphans = sorted(shm_entries() - before - _shm_in_use())
    for name in orphans:
        with contextlib.suppress(FileNotFoundError):
            (SHM / name).unlink()
    return orphans


def stop(proc: subprocess.Popen[Any], mark: str, shm_before: set[str], grace: float = GRACE) -> None:
    """Stop ``proc`` and every process carrying ``mark``: SIGTERM to its group
    first (a launcher tears its runtime down), SIGKILL to all that remain after
    ``grace`` seconds; then remove the shared memory they left (``shm_before``:
    `shm_entries` before ``proc`` started). Raises `LeftBehind` naming what
    survived. Another SIGTERM / SIGINT meanwhile waits until the sweep is done."""
    blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        _stop(proc, mark, grace)
        remove_orphaned_shm(shm_before)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _stop(proc: subprocess.Popen[Any], mark: str, grace: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        _signal(marked(mark), signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + SWEEP_DEADLINE
    while True:
        left = marked(mark)
        _signal(left, signal.SIGKILL)
        _reap()
        if not left:
            break
        if time.monotonic() > deadline:
            raise LeftBehind(f"processes of run {mark} survived SIGKILL for {SWEEP_DEADLINE:g} s: {sorted(left)}")
        time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
