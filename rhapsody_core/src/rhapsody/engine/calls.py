"""Calling a task's function where the engine runs it: sync or ``async def``,
one outcome encoding. Standard library and cloudpickle only (engine workers
import it).

`call_function` never raises for the function's own error: the exception object
and its traceback text travel back in the `Outcome`, so the client re-raises the
original type. What the function prints lands in the Outcome's ``stdout`` /
``stderr`` (None when it printed nothing), per task even when many run at once
(`rhapsody.engine.capture`); a failed function's ``stderr`` is what it printed
there, then the traceback. An ``async def`` function runs on an event loop kept per thread
(``asyncio.run`` per call would build and tear down a loop every time).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from rhapsody.engine import capture
from rhapsody.engine.capture import Captured
from rhapsody.engine.outcome import Outcome

_local = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


class CallControl:
    """Lets another thread cancel an ``async def`` call running on a worker
    thread's loop. A running sync function cannot be interrupted; `cancelled`
    tells a call that has not started yet not to start."""

    __slots__ = ("_loop", "_task", "cancelled")

    def __init__(self) -> None:
        self.cancelled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        self.cancelled = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    def _attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self._loop, self._task = loop, task
        if self.cancelled:  # cancelled before the task existed: checked after publishing it
            task.cancel()


# The last function found not to be ``async def``: asked once a task, and most
# tasks of a run call the same function (inspect's answer costs more than the call).
_last_plain: Any = None
# Return values that are never awaitable, told apart without inspect
_NOT_AWAITABLE = frozenset({type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset})


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` function (or a partial of one)."""
    global _last_plain
    if fn is _last_plain:
        return False
    if inspect.iscoroutinefunction(fn):
        return True
    _last_plain = fn
    return False


def invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], control: CallControl | None = None) -> Any:
    """Call ``fn`` here and now (awaiting it when it is, or returns, a
    coroutine) and return its value; its exception propagates."""
    if is_async(fn):
        loop = _thread_loop()
        task = loop.create_task(fn(*args, **kwargs))
        if control is not None:
            control._attach(loop, task)
        return loop.run_until_complete(task)
    result = fn(*args, **kwargs)
    if type(result) not in _NOT_AWAITABLE and inspect.isawaitable(result):
        return _thread_loop().run_until_complete(result)  # type: ignore[arg-type]
    return result


def call_function(
    fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, control: CallControl | None = None
) -> Outcome:
    """Run ``fn`` and capture how it ended and what it printed; never raises for ``fn``'s own error."""
    printed, token = capture.start()
    try:
        value = invoke(fn, args, kwargs or {}, control)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt in a task are the task's failure
        return _failure(exc, printed)
    finally:
        capture.stop(token)
    if printed.out is None and printed.err is None:  # the common case, kept cheap
        return Outcome(value)
    return Outcome(value, stdout=printed.stdout, stderr=printed.stderr)


def _failure(exc: BaseException, printed: Captured) -> Outcome:
    tb = traceback.format_exc()
    return Outcome(error=exc, traceback=tb, stdout=printed.stdout, stderr=printed.stderr + tb)


async def call_function_async(fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Outcome:
    """`call_function` for an engine whose worker already runs an event loop.
    Capture is per asyncio task: run each call in a task of its own."""
    printed, token = capture.start()
    try:
        result = fn(*args, **(kwargs or {}))
        if inspect.isawaitable(result):
            result = await result
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001
        return _failure(exc, printed)
    finally:
        capture.stop(token)
    if printed.out is None and printed.err is None:
        return Outcome(result)
    return Outcome(result, stdout=printed.stdout, stderr=printed.stderr)


def pack_call(fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, uid: str | None = None) -> bytes:
    """The bytes `call_packed` takes: the function travels by cloudpickle, so
    lambdas, closures and ``__main__`` functions work on remote workers.
    Raises `TypeError` naming the task and the piece that cannot be pickled."""
    kwargs = dict(kwargs or {})
    try:
        data: bytes = cloudpickle.dumps((fn, tuple(args), kwargs))
        return data
    except Exception as exc:  # pickling raises all kinds of errors
        raise TypeError(f"task {uid or '<unnamed>'}: cannot send {_unpicklable(fn, args, kwargs)} to a worker: {exc}") from exc


def _unpicklable(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [("the function", fn)] + [(f"args[{i}]", a) for i, a in enumerate(args)] + [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
    for name, value in parts:
        try:
            cloudpickle.dumps(value)
        except Exception:  # noqa: BLE001
            return f"{name} ({type(value).__name__})"
    return "the call"


def call_packed(payload: bytes) -> bytes:
    """Remote side of `pack_call`: unpack, call, return the packed `Outcome`.
    A payload that cannot be unpacked (a module missing on this worker) is the
    task's failure too."""
    try:
        fn, args, kwargs = cloudpickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001
        return Outcome(error=exc, traceback=traceback.format_exc()).pack()
    return call_function(fn, args, kwargs).pack()
