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
from typing import Any, TextIO


class Captured:
    """What one task printed so far (lists made on the first write: most
    function tasks print nothing, and this runs once per task)."""

    __slots__ = ("err", "out")

    def __init__(self) -> None:
        self.out: list[str] | None = None
        self.err: list[str] | None = None

    @property
    def stdout(self) -> str:
        return "".join(self.out) if self.out else ""

    @property
    def stderr(self) -> str:
        return "".join(self.err) if self.err else ""


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
        if self._which == "out":
            if captured.out is None:
                captured.out = []
            captured.out.append(text)
        else:
            if captured.err is None:
                captured.err = []
            captured.err.append(text)
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


def start() -> tuple[Captured, contextvars.Token[Captured | None]]:
    """Collect what is printed in the current context (this thread, or this
    asyncio task and the tasks it creates) until `stop` with the token.
    A pair of calls, not a context manager: it runs once per function task."""
    if type(sys.stdout) is not _Router or type(sys.stderr) is not _Router:
        _install()
    captured = Captured()
    return captured, _current.set(captured)


def stop(token: contextvars.Token[Captured | None]) -> None:
    _current.reset(token)
