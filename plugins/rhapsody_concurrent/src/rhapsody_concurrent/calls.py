"""What runs inside a pool worker: a sync or async function call."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle

_local = threading.local()


def _worker_loop() -> asyncio.AbstractEventLoop:
    # One loop per worker thread, reused: asyncio.run() per call would build and
    # tear down a loop for every async task.
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


class AsyncHandle:
    """Lets the event loop thread cancel an ``async def`` task running on a
    worker thread's loop (a sync function cannot be interrupted)."""

    __slots__ = ("cancelled", "loop", "task")

    def __init__(self) -> None:
        self.cancelled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        self.cancelled = True
        loop, task = self.loop, self.task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)


def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], handle: AsyncHandle | None = None) -> Any:
    if inspect.iscoroutinefunction(fn):
        loop = _worker_loop()
        task = loop.create_task(fn(*args, **kwargs))
        if handle is not None:
            handle.loop, handle.task = loop, task
            if handle.cancelled:  # cancelled before it got here: checked after publishing the task
                task.cancel()
        return loop.run_until_complete(task)
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        return _worker_loop().run_until_complete(result)  # type: ignore[arg-type]
    return result


def call_pickled(payload: bytes) -> Any:
    """For process pools: the function travels by cloudpickle (lambdas, closures
    and functions from ``__main__`` work); its result by the pool's pickle."""
    fn, args, kwargs = cloudpickle.loads(payload)
    return call(fn, args, kwargs)
