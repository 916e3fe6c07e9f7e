"""The V2 worker's inbox protocol, one interleaving forced.

`rhapsody_dragon.pool_worker` imports no Dragon: its queues arrive as arguments.
Here the inbox is a standard-library queue that holds one message back in the
watcher thread's read until the worker's main thread has gone to wait for the
next message. That stands in for a fault that cannot be caused on demand: the
watcher preempted between taking the client's last "tasks" message and handing
it over, while the main thread finishes its queue. On Dragon this happened about
once in a thousand hand-overs (see test_dragon's V2 hand-over test, which runs
it on the real engine) and left the task SUBMITTED for ever.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from rhapsody.engine.calls import pack_call
from rhapsody.engine.outcome import Outcome
from rhapsody.testing import tasks as fn
from rhapsody_dragon.pool_worker import PoolWorker

#: how long the held message waits for the main thread to block before it is handed over anyway
HOLD = 1.0


class HeldBackInbox:
    """A worker inbox whose non-blocking read of ``held`` waits until the main
    thread is inside a blocking read (or `HOLD` seconds pass)."""

    def __init__(self) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        self.main_waiting = threading.Event()
        self.held: Any = None

    def put(self, msg: Any) -> None:
        self._q.put(msg)

    def get(self, block: bool = True) -> Any:
        if not block:
            msg = self._q.get(block=False)
            if msg is self.held:
                self.main_waiting.wait(HOLD)
            return msg
        self.main_waiting.set()
        try:
            return self._q.get()
        finally:
            self.main_waiting.clear()


def _spec(uid: str, function: Any, *args: Any) -> tuple[Any, ...]:
    return ("f", uid, pack_call(function, args))


def _outcomes(outq: queue.Queue[Any], uids: set[str], timeout: float) -> dict[str, Outcome]:
    """The outcomes the worker reported for ``uids`` within ``timeout`` seconds."""
    found: dict[str, Outcome] = {}
    deadline = time.monotonic() + timeout
    while uids - found.keys() and (left := deadline - time.monotonic()) > 0:
        try:
            _, events = outq.get(timeout=left)
        except queue.Empty:
            break
        found.update((event[1], Outcome.unpack(event[2])) for event in events if event[0] == "done")
    return found


def test_tasks_the_watcher_takes_as_the_queue_runs_dry_still_run() -> None:
    inbox, outq = HeldBackInbox(), queue.Queue()
    worker = threading.Thread(target=PoolWorker(inbox, outq, 0).serve, daemon=True)
    worker.start()
    try:
        inbox.put(("tasks", [_spec("first", fn.sleep, 0.3)]))
        time.sleep(0.1)  # "first" runs: the watcher reads the inbox now
        handover = ("tasks", [_spec("second", fn.add, 2, 3)])
        inbox.held = handover
        inbox.put(handover)
        done = _outcomes(outq, {"first", "second"}, 10)
        assert "first" in done
        assert "second" in done, "the task handed over as the worker's queue ran dry never ran"
        assert done["second"].value == 5
    finally:
        inbox.put(None)
        worker.join(10)
    assert not worker.is_alive()
