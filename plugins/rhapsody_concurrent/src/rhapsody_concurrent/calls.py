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


def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return _worker_loop().run_until_complete(fn(*args, **kwargs))
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        return _worker_loop().run_until_complete(result)  # type: ignore[arg-type]
    return result


def call_pickled(payload: bytes) -> Any:
    """For process pools: the function travels by cloudpickle (lambdas, closures
    and functions from ``__main__`` work); its result by the pool's pickle."""
    fn, args, kwargs = cloudpickle.loads(payload)
    return call(fn, args, kwargs)
