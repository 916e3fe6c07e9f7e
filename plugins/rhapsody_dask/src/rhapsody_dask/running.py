"""RUNNING, from the worker that starts a task to the backend that submitted it.

A task announces that it started executing by logging an event on its
backend's topic (``Worker.log_event``); the backend's client is subscribed to
that topic (``Client.subscribe_topic``) and reports RUNNING. No polling.

Worker side: announcements are buffered per worker and sent as one event per
topic ``ANNOUNCE_DELAY`` after the first of them (one message for many tasks).
A task that ends before that is taken out again (`retract`): its result carries
the news, the client reports RUNNING just before it, and no extra message
delays the result in Dask's batched worker -> scheduler -> client streams.

Standard library only: it is imported inside the workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: how long a worker holds RUNNING announcements before sending them as one event
ANNOUNCE_DELAY = 0.005
#: seconds after which an unflushed buffer is taken as lost (its timer never ran)
_STALE = 2.0

_lock = threading.Lock()
# id(worker) -> (worker, {topic: [key, ...]}, armed at): waiting for the next flush
_pending: dict[int, tuple[Any, dict[str, list[str]], float]] = {}


def announce(topic: str, key: str) -> Any:
    """Tell the client on ``topic`` that the task ``key`` is executing now;
    returns the worker (None outside a Dask worker) for `retract`."""
    try:
        from distributed import get_worker  # noqa: PLC0415 - present in every worker

        worker = get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker (a direct call)
        return None
    now = time.monotonic()
    with _lock:
        slot = _pending.get(id(worker))
        if slot is not None and slot[0] is worker:
            slot[1].setdefault(topic, []).append(key)
            if now - slot[2] < _STALE:
                return worker
            _pending[id(worker)] = (worker, slot[1], now)  # overdue: keep what it holds and arm again
        else:  # none yet, or one left by a closed worker that had the same id
            _pending[id(worker)] = (worker, {topic: [key]}, now)
    worker.loop.add_callback(worker.loop.call_later, ANNOUNCE_DELAY, _flush, worker)
    return worker


def retract(worker: Any, topic: str, key: str) -> None:
    """The task ended before its announcement went out: do not send it."""
    if worker is None:
        return
    with _lock:
        slot = _pending.get(id(worker))
        if slot is not None:
            keys = slot[1].get(topic)
            if keys and key in keys:
                keys.remove(key)


def _flush(worker: Any) -> None:
    """Send the buffered announcements (runs on the worker's event loop)."""
    with _lock:
        slot = _pending.get(id(worker))
        if slot is None or slot[0] is not worker:
            return
        del _pending[id(worker)]
    for topic, keys in slot[1].items():
        if keys:
            worker.log_event(topic, [worker.address, keys])


def listener(on_running: Callable[[str, str], None]) -> Callable[[tuple[float, Any]], None]:
    """Client side: the ``subscribe_topic`` handler that calls
    ``on_running(worker_address, key)`` for every task an event announces."""

    def handle(event: tuple[float, Any]) -> None:
        _, message = event
        try:
            worker, keys = message
        except (TypeError, ValueError):
            return
        if isinstance(keys, (list, tuple)):  # msgpack turns the list into a tuple
            for key in keys:
                on_running(worker, key)

    return handle
