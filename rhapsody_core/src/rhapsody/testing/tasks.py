"""Task functions for tests and examples. They live in an importable module so
that every engine's workers can load them by name."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any


def noop() -> None:
    return None


def add(a: int, b: int) -> int:
    return a + b


def echo(value: Any) -> Any:
    return value


async def async_add(a: int, b: int, delay: float = 0.0) -> int:
    await asyncio.sleep(delay)
    return a + b


class TaskBoom(ValueError):
    """Raised on purpose by `boom`."""


def boom(message: str = "boom") -> None:
    raise TaskBoom(message)


async def async_boom(message: str = "async boom") -> None:
    await asyncio.sleep(0)
    raise TaskBoom(message)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def getpid() -> int:
    return os.getpid()


def getenv(name: str) -> str | None:
    return os.environ.get(name)


def touch(path: str) -> str:
    """Create ``path``: lets a test see whether a task ran at all."""
    with open(path, "w") as fh:
        fh.write("ran\n")
    return path


def die_then_succeed(state_dir: str, deaths: int, linger: float = 2.0) -> int:
    """Kill the worker process running this call (SIGKILL, after ``linger``
    seconds, so the engine has seen it start) the first ``deaths`` times it
    runs; after that return the pid. Every start appends to
    ``<state_dir>/starts``, every return to ``<state_dir>/done``: a test sees
    how often it ran and how often it ran to the end."""
    import signal  # noqa: PLC0415 - only this task needs it

    with open(os.path.join(state_dir, "starts"), "a") as fh:
        fh.write(f"{os.getpid()}\n")
    with open(os.path.join(state_dir, "starts")) as fh:
        started = len(fh.read().split())
    time.sleep(linger)
    if started <= deaths:
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.path.join(state_dir, "done"), "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return os.getpid()


class Transient(RuntimeError):
    """Raised on purpose by `fail_then_succeed`."""


def fail_then_succeed(state_dir: str, failures: int) -> int:
    """Raise `Transient` the first ``failures`` calls (counted in
    ``<state_dir>/calls``), then return how many calls there were."""
    path = os.path.join(state_dir, "calls")
    with open(path, "a") as fh:
        fh.write("x\n")
    with open(path) as fh:
        calls = len(fh.read().split())
    if calls <= failures:
        raise Transient(f"call {calls} fails on purpose")
    return calls


def journal_work(i: int, marker_dir: str) -> dict[str, Any]:
    """A journaled task for kill-and-resume tests: appends the run id
    (``$RHAPSODY_TEST_RUN``) to ``<marker_dir>/<i>`` (how often and in which run
    it ran), sleeps ``$RHAPSODY_TEST_SLEEP`` seconds, returns a value derived from ``i``."""
    with open(os.path.join(marker_dir, str(i)), "a") as fh:
        fh.write(os.environ.get("RHAPSODY_TEST_RUN", "?") + "\n")
    time.sleep(float(os.environ.get("RHAPSODY_TEST_SLEEP", "0")))
    print(f"task {i} says {i * i}")
    return {"i": i, "square": i * i, "text": f"item-{i}"}


def chatty(tag: str, lines: int = 3, pause: float = 0.02) -> str:
    """Print ``lines`` numbered lines tagged ``tag`` to stdout and to stderr,
    pausing between them so that tasks running at once interleave."""
    for i in range(lines):
        print(f"{tag} out {i}", flush=True)
        print(f"{tag} err {i}", file=sys.stderr, flush=True)
        time.sleep(pause)
    return tag


async def async_chatty(tag: str, lines: int = 3, pause: float = 0.02) -> str:
    """`chatty` for an event loop: the pauses let other ``async def`` tasks print in between."""
    for i in range(lines):
        print(f"{tag} out {i}", flush=True)
        print(f"{tag} err {i}", file=sys.stderr, flush=True)
        await asyncio.sleep(pause)
    return tag
