"""RUNNING, from the worker that starts a task to the backend that submitted it.

A task announces that it started executing by logging an event on its
backend's topic (``Worker.log_event``); the backend's client is subscribed to
that topic (``Client.subscribe_topic``) and reports RUNNING. No polling.

Worker side: announcements wait ``ANNOUNCE_DELAY`` and go out together, one
event per topic (one message for many tasks). A task that ends before that is
taken out again (`retract`): its result carries the news, the client reports
RUNNING just before it, and no extra message delays the result in Dask's
batched worker -> scheduler -> client streams.

The waiting is done by one sender thread per worker process, which wakes every
``ANNOUNCE_DELAY`` while tasks start and sleeps when none do: a stream of short
tasks costs the worker's event loop nothing (arming a timer on it from the task's
thread woke it once a task), and the loop is woken only for an event to send.

Standard library only: it is imported inside the workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

#: how long an announcement waits for its task to end before it is sent
ANNOUNCE_DELAY = 0.005

_cond = threading.Condition()
# id(worker) -> (worker, {topic: {key: announced at}}): what waits to be sent
_pending: dict[int, tuple[Any, dict[str, dict[str, float]]]] = {}
_sender: threading.Thread | None = None
_idle = True  # the sender waits for an announcement (not for its delay to pass)


def announce(topic: str, key: str) -> Any:
    """Tell the client on ``topic`` that the task ``key`` is executing now;
    returns the worker (None outside a Dask worker) for `retract`."""
    global _sender, _idle
    try:
        from distributed import get_worker  # noqa: PLC0415 - present in every worker

        worker = get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker (a direct call)
        return None
    now = time.monotonic()
    with _cond:
        slot = _pending.get(id(worker))
        if slot is None or slot[0] is not worker:  # none yet, or one left by a closed worker that had the same id
            slot = _pending[id(worker)] = (worker, {})
        slot[1].setdefault(topic, {})[key] = now
        if _sender is None or not _sender.is_alive():  # the first, or a forked child's (threads do not survive a fork)
            _sender = threading.Thread(target=_send_loop, name="rhapsody-dask-announce", daemon=True)
            _sender.start()
        elif _idle:
            _idle = False
            _cond.notify()
    return worker


def retract(worker: Any, topic: str, key: str) -> None:
    """The task ended before its announcement went out: do not send it."""
    if worker is None:
        return
    with _cond:
        slot = _pending.get(id(worker))
        if slot is not None:
            keys = slot[1].get(topic)
            if keys:
                keys.pop(key, None)


def _send_loop() -> None:
    global _idle
    while True:
        with _cond:
            while not _due_soon():
                _idle = True
                _cond.wait()
            _idle = False
        time.sleep(ANNOUNCE_DELAY)
        for worker, topic, keys in _take_due():
            try:
                worker.loop.add_callback(_send, worker, topic, keys)
            except Exception:  # noqa: BLE001 - the worker is closing: nobody is left to tell
                pass


def _due_soon() -> bool:
    return any(keys for _, topics in _pending.values() for keys in topics.values())


def _take_due() -> list[tuple[Any, str, list[str]]]:
    """The announcements at least ``ANNOUNCE_DELAY`` old, taken out; younger ones wait."""
    cutoff = time.monotonic() - ANNOUNCE_DELAY
    due: list[tuple[Any, str, list[str]]] = []
    with _cond:
        for ident, (worker, topics) in list(_pending.items()):
            for topic, keys in list(topics.items()):
                old = [key for key, at in keys.items() if at <= cutoff]
                for key in old:
                    del keys[key]
                if old:
                    due.append((worker, topic, old))
                if not keys:
                    del topics[topic]
            if not topics:  # nothing waits for this worker: not kept (it may be closing)
                del _pending[ident]
    return due


def _send(worker: Any, topic: str, keys: list[str]) -> None:
    """On the worker's event loop: one event for these tasks."""
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
