"""Executables as local subprocesses, each in a process group of its own so that
cancelling kills the whole tree."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from rhapsody.task import ComputeTask

KILL_GRACE_S = 2.0
KILL_REAP_S = 30.0  # SIGKILL cannot be ignored: this only bounds a process stuck in the kernel


def environment(task: ComputeTask, rank: int, ranks: int) -> dict[str, str] | None:
    extra = task.task_backend_specific_kwargs.get("env")
    if not extra and ranks == 1:
        return None
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    if ranks > 1:
        env.update({"RHAPSODY_RANK": str(rank), "RHAPSODY_RANKS": str(ranks)})
    return env


async def spawn(task: ComputeTask, rank: int, ranks: int, stdout: int | IO[Any], stderr: int | IO[Any]) -> asyncio.subprocess.Process:
    kw: dict[str, Any] = {
        "stdout": stdout,
        "stderr": stderr,
        "stdin": asyncio.subprocess.DEVNULL,
        "cwd": task.task_backend_specific_kwargs.get("cwd"),
        "env": environment(task, rank, ranks),
        "start_new_session": True,
    }
    if task.runs_in_shell:
        return await asyncio.create_subprocess_shell(task.shell_command, **kw)
    return await asyncio.create_subprocess_exec(task.executable, *task.arguments, **kw)  # type: ignore[arg-type]


async def kill_tree(procs: Sequence[asyncio.subprocess.Process]) -> None:
    """SIGTERM each process group, SIGKILL what is left after a grace period,
    and reap them: nothing is left behind, not even a zombie."""
    live = [p for p in procs if p.returncode is None]
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_REAP_S)):
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        if not live:
            return
        await asyncio.wait([asyncio.ensure_future(p.wait()) for p in live], timeout=grace)
        live = [p for p in live if p.returncode is None]


def decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def capture_files(out: Path, err: Path) -> tuple[IO[bytes], IO[bytes]]:
    return open(out, "wb"), open(err, "wb")
