"""The worker side of V2 (`rhapsody_dragon.pool`): one long-lived Dragon process
running tasks one at a time. Imports no Dragon and nothing heavy; its queues
arrive as arguments.

Messages in: ``("tasks", [spec, ...])``, ``("cancel", uid)``, ``None`` (stop).
A spec is ``("f", uid, packed call)`` or ``("x", uid, LaunchSpec)``. Events out,
in batches ``(wid, [event, ...])``: ``("start", uid, where)`` (``<host>/pid <pid>`` of this worker), ``("done", uid, packed
Outcome)``, ``("cancel", uid, verdict)``.

Who reads the inbox: the main thread, with a blocking ``get``, while it has
nothing to run; a watcher thread, with non-blocking reads, while a task runs, so
a cancel is answered at once; never both at once (see `PoolWorker._read`). Not
a reader thread blocked in ``get`` all the time: Dragon's blocking (and timed)
``get`` keeps the GIL while it spins before sleeping, which held the thread that
was handed a message back by ~6 ms each time (measured: 5.9 ms vs 0.1 ms per
round trip).

Verdicts, decided under the lock that starts and ends tasks: "skipped" (still
queued here; it will not run), "running" (a function runs now: the client kills
this worker), "killed" (an executable runs now or is being started: its process
group is stopped, at once or the moment it exists, and the worker lives on) or
"gone" (it already ended; its "done" event went out before the verdict).
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections import deque
from typing import Any

from rhapsody.engine.calls import call_packed
from rhapsody.engine.process import CommandTable

#: seconds between non-blocking reads of the inbox while a task runs: first, and at most
POLL_MIN, POLL_MAX = 0.0005, 0.005
#: seconds the flusher lets events gather before sending them
FLUSH_DELAY = 0.005


class Outbox:
    """Events on their way to the client, sent in batches: at once by `flush`,
    or within `FLUSH_DELAY` by a flusher thread that sleeps while it is empty."""

    def __init__(self, outq: Any, wid: int) -> None:
        self._outq, self._wid = outq, wid
        self._events: list[tuple[Any, ...]] = []
        self._cv = threading.Condition()
        self._sending = threading.Lock()
        self.closed = threading.Event()

    def emit(self, event: tuple[Any, ...]) -> None:
        with self._cv:
            self._events.append(event)
            self._cv.notify()

    def flush(self) -> None:
        # Taking a batch and sending it happen under one lock: three threads flush,
        # and two batches sent in the other order would put a task's "done" before
        # the "cancel" verdict that explains it.
        with self._sending:
            with self._cv:
                if not self._events:
                    return
                batch, self._events = self._events, []
            self._outq.put((self._wid, batch))

    def run_flusher(self) -> None:
        while not self.closed.is_set():
            with self._cv:
                while not self._events and not self.closed.is_set():
                    self._cv.wait()
            if self.closed.wait(FLUSH_DELAY):
                return
            self.flush()

    def close(self) -> None:
        self.closed.set()
        with self._cv:
            self._cv.notify()
        self.flush()


class PoolWorker:
    def __init__(self, inq: Any, outq: Any, wid: int) -> None:
        self.inq = inq
        self.outbox = Outbox(outq, wid)
        self.commands = CommandTable()
        self.local: deque[tuple[Any, ...]] = deque()  # specs handed to this worker, not started yet
        self.skipped: set[str] = set()
        self.lock = threading.Condition()
        self.current: tuple[Any, ...] | None = None  # the spec running now
        self.closing = False
        self.busy = threading.Event()  # a task runs: the watcher reads the inbox
        self.reading = threading.Lock()  # held by the thread reading the inbox (see _read)
        self.where = f"{socket.gethostname()}/pid {os.getpid()}"  # every task of this worker runs here

    def serve(self) -> None:
        threading.Thread(target=self.outbox.run_flusher, daemon=True, name="rhapsody-flusher").start()
        threading.Thread(target=self._watch, daemon=True, name="rhapsody-watcher").start()
        while True:
            spec = self._next()
            if spec is None:
                if self.closing:
                    break
                self.outbox.flush()  # results out before this thread blocks
                self._read(block=True)
                continue
            self.busy.set()
            try:
                result = self._execute(spec)
            finally:
                self.busy.clear()
            with self.lock:
                self.current = None
                self.outbox.emit(("done", spec[1], result))
                idle = not self.local
            if idle:  # nothing queued here: send the result now, not at the next flusher tick
                self.outbox.flush()
        self.busy.set()  # lets the watcher see the stop
        self.outbox.close()

    def _next(self) -> tuple[Any, ...] | None:
        """The next spec to run, marked current and announced; None if none is queued."""
        with self.lock:
            while self.local and not self.closing:
                spec = self.local.popleft()
                if spec[1] in self.skipped:
                    self.skipped.discard(spec[1])
                    continue
                self.current = spec
                self.outbox.emit(("start", spec[1], self.where))
                return spec
        return None

    def _execute(self, spec: tuple[Any, ...]) -> bytes:
        if spec[0] == "f":
            return call_packed(spec[2])
        outcome = self.commands.run(spec[2])
        if outcome is None:  # stopped before it started: the client already dropped it
            return b""
        return outcome.pack()

    def _handle(self, msg: Any) -> None:
        with self.lock:
            if msg is None:
                self.closing = True
                return
            if msg[0] == "tasks":
                self.local.extend(msg[1])
                return
            self.outbox.emit(("cancel", msg[1], self._cancel(msg[1])))
        self.outbox.flush()

    def _cancel(self, uid: str) -> str:
        """The verdict on cancelling ``uid`` (lock held)."""
        current = self.current
        if current is not None and current[1] == uid:
            if current[0] == "x":
                self.commands.stop(uid)  # running, or stopped the moment it would start
                return "killed"
            return "running"
        if any(spec[1] == uid for spec in self.local):
            self.skipped.add(uid)
            return "skipped"
        return "gone"

    def _read(self, block: bool) -> bool:
        """Take one message if there is one; False when the inbox is empty or
        the other thread is reading it.

        One thread reads at a time, and the main thread blocks only after
        checking, as the reader, that it has nothing to run: the watcher may have
        taken the last "tasks" message while the main thread finished its queue,
        and that work would then wait for a message the client never sends."""
        if not self.reading.acquire(blocking=block):
            return False
        try:
            if block:
                with self.lock:
                    if self.local or self.closing:
                        return True
            try:
                msg = self.inq.get() if block else self.inq.get(block=False)
            except queue.Empty:
                return False
            except Exception:  # noqa: BLE001 - the queue is gone: stop
                msg = None
            self._handle(msg)
            return True
        finally:
            self.reading.release()

    def _watch(self) -> None:
        while True:
            self.busy.wait()
            if self.closing or self.outbox.closed.is_set():
                return
            delay = POLL_MIN
            while self.busy.is_set() and not self.outbox.closed.is_set():
                if self._read(block=False):
                    delay = POLL_MIN
                else:
                    time.sleep(delay)
                    delay = min(delay * 2, POLL_MAX)


def serve(inq: Any, outq: Any, wid: int) -> None:
    """A V2 pool worker's main: what the client's Dragon `Process` runs."""
    PoolWorker(inq, outq, wid).serve()
