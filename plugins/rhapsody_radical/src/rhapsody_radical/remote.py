"""Runs inside a raptor worker: calls the user's function and sends back either
its return value or its exception, both cloudpickled, as text RP can carry.
Kept free of RHAPSODY and RP imports so workers load it cheaply."""

from __future__ import annotations

import base64
import inspect
import traceback
from typing import Any

import cloudpickle


def pack(obj: Any) -> str:
    return base64.b64encode(cloudpickle.dumps(obj)).decode("ascii")


def unpack(text: str) -> Any:
    return cloudpickle.loads(base64.b64decode(text))


async def call(blob: str) -> str:
    """``blob`` = pack((function, args, kwargs)). Returns pack(("ok", value)) or
    pack(("err", exception, traceback_text)); never raises for the function's
    own errors, so the original exception object reaches the client."""
    func, args, kwargs = unpack(blob)
    try:
        if inspect.iscoroutinefunction(func):
            value = await func(*args, **kwargs)
        else:
            value = func(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
    except BaseException as exc:  # noqa: BLE001 - the client decides what it means
        text = traceback.format_exc()
        try:
            return pack(("err", exc, text))
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled
            return pack(("err", RuntimeError(f"{type(exc).__name__}: {exc}"), text))
    try:
        return pack(("ok", value))
    except Exception as exc:  # noqa: BLE001
        return pack(("err", TypeError(f"the return value of {getattr(func, '__name__', func)!r} cannot be pickled: {exc}"), ""))
