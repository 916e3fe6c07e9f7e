"""The function a raptor worker runs for every RHAPSODY function task, and the
text encoding around it: RP carries a task's arguments and return value as
text, so the packed call and the packed `Outcome` travel base64-encoded.
Standard library, cloudpickle and `rhapsody.engine` only: raptor processes
import it."""

from __future__ import annotations

import base64
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from rhapsody.engine.calls import call_function_async, pack_call
from rhapsody.engine.outcome import Outcome


def encode_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], uid: str) -> str:
    """Client side; raises `TypeError` naming the task and the part that cannot be pickled."""
    return base64.b64encode(pack_call(fn, args, kwargs, uid=uid)).decode("ascii")


async def run(call: str) -> str:
    """Raptor side: run the packed call, return the packed `Outcome`; never
    raises for the function's own error. A coroutine because RP's worker calls
    it inside its own event loop (an ``async def`` task function is awaited there)."""
    try:
        fn, args, kwargs = cloudpickle.loads(base64.b64decode(call))
    except BaseException as exc:  # noqa: BLE001 - e.g. the function's module is missing here
        outcome = Outcome(error=exc, traceback=traceback.format_exc())
    else:
        outcome = await call_function_async(fn, args, kwargs)
    return base64.b64encode(outcome.pack()).decode("ascii")


def decode_outcome(text: str) -> Outcome:
    return Outcome.unpack(base64.b64decode(text))
