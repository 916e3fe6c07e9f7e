"""Per-task capture of what a Python function task prints.

Many function tasks run at once in one process (worker threads, or ``async
def`` tasks on one event loop), and they share ``sys.stdout`` / ``sys.stderr``.
Those two are replaced, once, by routers: a write goes to the buffer of the
task whose context it comes from (a `contextvars.ContextVar`, which follows
each thread and each asyncio task), and anywhere else to the stream that was
there before. Output written below Python (a C library writing to file
descriptor 1, a child process) and output of threads the task starts itself
is not the task's: it goes to the process's streams.

Standard library only: engine workers import it.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class Captured:
    """What one task printed so far."""

    __slots__ = ("err", "out")

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


_current: contextvars.ContextVar[Captured | None] = contextvars.ContextVar("rhapsody_captured", default=None)


class _Router:
    """Stands in for sys.stdout or sys.stderr; everything but writing is the
    original stream's (encoding, fileno, isatty, ...)."""

    def __init__(self, original: TextIO, which: str) -> None:
        self.original = original
        self._which = which

    def write(self, text: str) -> int:
        captured = _current.get()
        if captured is None:
            return self.original.write(text)
        (captured.out if self._which == "out" else captured.err).append(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _current.get() is None:
            self.original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


_install_lock = threading.Lock()


def _install() -> None:
    """Put routers in place; again if someone (pytest, redirect_stdout) has
    replaced sys.stdout / sys.stderr since: the router wraps what is there now."""
    with _install_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout, "out")  # type: ignore[assignment]
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr, "err")  # type: ignore[assignment]


@contextmanager
def capturing() -> Iterator[Captured]:
    """Collect what is printed in the current context (this thread, or this
    asyncio task and the tasks it creates) until the block ends."""
    if not isinstance(sys.stdout, _Router) or not isinstance(sys.stderr, _Router):
        _install()
    captured = Captured()
    token = _current.set(captured)
    try:
        yield captured
    finally:
        _current.reset(token)
