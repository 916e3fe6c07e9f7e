"""Live progress of a session: per backend, how many tasks are queued, running
and ended, the rate they end at and the time left at that rate.

On a terminal the lines are rewritten in place every half second; on anything
else (a log file, a pipe, CI) one plain line per backend is written every
``RHAPSODY_PROGRESS_INTERVAL`` seconds (default 10) when something changed.
A last line is always written when the session closes. Off (the default) it
costs nothing: no state observer is added. On, it is a state observer of each
backend (`Backend.add_state_observer`), called directly at every transition.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, TextIO

INTERVAL_ENV = "RHAPSODY_PROGRESS_INTERVAL"
TTY_INTERVAL, LOG_INTERVAL = 0.5, 10.0

# per backend: [submitted, running, done, failed, canceled]
SUBMITTED, RUNNING, DONE, FAILED, CANCELED = range(5)
_ENDS = {"DONE": DONE, "FAILED": FAILED, "CANCELED": CANCELED}


class Progress:
    def __init__(self, stream: TextIO | None = None, interval: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval or _interval_from_env() or (TTY_INTERVAL if self.tty else LOG_INTERVAL)
        self.counts: dict[str, list[int]] = {}
        self.first: dict[str, float] = {}  # backend -> when its first task was submitted
        self.watched: dict[int, Any] = {}  # id() of each watched Backend -> the backend
        self._timer: asyncio.TimerHandle | None = None
        self._drawn_lines = 0
        self._last_text = ""
        self._closed = False

    @classmethod
    def for_session(cls, session: Any, stream: TextIO | None = None, interval: float | None = None) -> Progress:
        progress = cls(stream, interval)
        for backend in session.backends.values():
            progress.observe_backend(backend)
        return progress

    def observe_backend(self, backend: Any) -> None:
        if self._closed or id(backend) in self.watched:
            return
        self.watched[id(backend)] = backend
        self.counts.setdefault(backend.name, [0, 0, 0, 0, 0])
        backend.add_state_observer(self.observe)

    def observe(self, backend: Any, task: Any, old_state: Any, new_state: Any) -> None:
        counts = self.counts[backend.name]
        state = new_state._value_
        if state == "SUBMITTED":
            if old_state._value_ != "NEW":  # a retry: the same task again, no longer running
                counts[RUNNING] -= old_state._value_ == "RUNNING"
                return
            counts[SUBMITTED] += 1
            if backend.name not in self.first:
                self.first[backend.name] = time.monotonic()
        elif state == "RUNNING":
            counts[RUNNING] += 1
        else:
            if old_state._value_ == "RUNNING":
                counts[RUNNING] -= 1
            counts[_ENDS[state]] += 1
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.draw()
        if not self._closed and any(c[SUBMITTED] > c[DONE] + c[FAILED] + c[CANCELED] for c in self.counts.values()):
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def lines(self) -> list[str]:
        now = time.monotonic()
        out = []
        for name, (submitted, running, done, failed, canceled) in sorted(self.counts.items()):
            ended = done + failed + canceled
            queued = max(submitted - ended - running, 0)
            elapsed = now - self.first.get(name, now)
            rate = ended / elapsed if elapsed > 0 else 0.0
            left = submitted - ended
            eta = f"{left / rate:.0f} s" if rate > 0 and left else ("-" if left else "0 s")
            out.append(
                f"{name}: {ended}/{submitted} ended ({done} done, {failed} failed, {canceled} canceled), "
                f"{running} running, {queued} queued | {rate:.1f} tasks/s | ETA {eta}"
            )
        return out

    def draw(self, final: bool = False) -> None:
        lines = self.lines()
        text = "\n".join(lines)
        if not lines or (text == self._last_text and not final):
            return
        self._last_text = text
        if self.tty:
            up = f"\x1b[{self._drawn_lines}F" if self._drawn_lines else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn_lines = len(lines)
        else:
            stamp = time.strftime("%H:%M:%S")
            self.stream.write("".join(f"rhapsody progress {stamp} {line}\n" for line in lines))
        self.stream.flush()

    def close(self) -> None:
        """The last counts, then stop watching. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for backend in self.watched.values():
            backend.remove_state_observer(self.observe)
        self.draw(final=True)


def _interval_from_env() -> float | None:
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{INTERVAL_ENV} must be > 0 seconds, got {raw!r}")
    return value
