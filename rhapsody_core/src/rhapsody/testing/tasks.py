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
