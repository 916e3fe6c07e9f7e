"""Tasks waiting for cores, in submission order, shared by the event loop and
the pool's threads.

The pool's threads take their next task from here themselves when one ends,
so a stream of short functions never waits for a trip through the event loop
to be started (the loop hears of them in batches, when it next wakes).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from rhapsody.engine import TaskHandle


class CoreQueue:
    """``free``: cores not taken by a running task. A task is taken only when
    the head of the queue fits: a large task at the head waits for room
    rather than being overtaken forever. Every field is guarded by ``lock``."""

    def __init__(self, cores: int) -> None:
        self.lock = threading.Lock()
        self.free = cores
        self.waiting: deque[TaskHandle] = deque()

    def put(self, handles: Iterable[TaskHandle]) -> None:
        with self.lock:
            self.waiting.extend(handles)

    def release(self, cores: int) -> None:
        with self.lock:
            self.free += cores

    def remove(self, handle: TaskHandle) -> bool:
        """Take ``handle`` out if it has not started; True if it was waiting."""
        with self.lock:
            try:
                self.waiting.remove(handle)
            except ValueError:
                return False
            return True

    def head_fits_locked(self) -> TaskHandle | None:
        """The head task if it fits now (call with ``lock`` held)."""
        if self.waiting:
            head = self.waiting[0]
            if head.task.resources.cores <= self.free:
                return head
        return None

    def take_locked(self) -> TaskHandle:
        """Pop the head, counting its cores as taken (call with ``lock`` held,
        after `head_fits_locked` said it fits)."""
        handle = self.waiting.popleft()
        self.free -= handle.task.resources.cores
        return handle
