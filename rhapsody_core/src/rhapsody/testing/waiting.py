"""Helpers for tests that drive a real engine: a loop that outlives one test,
and waits that fail with a message instead of hanging."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from rhapsody.states import TaskState
from rhapsody.task import BaseTask, ComputeTask


class LoopRunner:
    """Runs coroutines on one event loop that outlives a single test, each call
    bounded by a deadline so a broken backend fails the test instead of hanging."""

    def __init__(self, deadline: float = 180.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.deadline = deadline

    def __call__(self, coro: Coroutine[Any, Any, Any], deadline: float | None = None) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, deadline or self.deadline))

    def close(self) -> None:
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def wait_for_state(task: BaseTask, *states: TaskState, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while task.state not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task.uid} is {task.state}, expected one of {[s.value for s in states]} within {timeout} s")
        await asyncio.sleep(0.02)


async def wait_for_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not written within {timeout} s")
        await asyncio.sleep(0.02)
    return path.read_text().strip()


def left_in(folder: Path, within: float = 0.0) -> list[str]:
    """The names in ``folder``, sorted: what a child left in a temp folder of its
    own. Looked at again until it is empty or ``within`` seconds have passed
    (a guard process may still be removing something)."""
    deadline = time.monotonic() + within
    while True:
        left = sorted(entry.name for entry in folder.iterdir())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


async def wait_until_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still runs {timeout} s after its task was stopped")
        await asyncio.sleep(0.05)


def sleeper(pidfile: Path, seconds: int = 60, **kw: Any) -> ComputeTask:
    """An executable that records its pid, then sleeps (exec keeps the pid)."""
    return ComputeTask(executable="/bin/sh", arguments=["-c", f"echo $$ > {pidfile}; exec sleep {seconds}"], **kw)


async def await_task(task: BaseTask) -> Any:
    return await task
