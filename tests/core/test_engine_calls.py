"""`rhapsody.engine.calls` and `Outcome`: one encoding of how a function
ended, on every engine; and `core_count`."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest

from rhapsody.engine import CallControl, Outcome, call_function, call_packed, core_count, pack_call
from rhapsody.testing import tasks as fn


class Unpicklable(Exception):
    """An exception that refuses to be pickled (holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable() -> None:
    raise Unpicklable("lock inside")


def return_lock() -> Any:
    return threading.Lock()


# ------------------------------------------------------------------ call_function
def test_sync_and_async_values() -> None:
    assert call_function(fn.add, (2, 3)).value == 5
    assert call_function(fn.add, (2,), {"b": 5}).value == 7
    async_outcome = call_function(fn.async_add, (1, 2), {"delay": 0.01})
    assert async_outcome.ok and async_outcome.value == 3
    again = call_function(fn.async_add, (4, 5))  # the thread's loop is reused
    assert again.value == 9


def test_function_returning_an_awaitable() -> None:
    def later() -> Any:
        return fn.async_add(1, 1)

    assert call_function(later).value == 2


@pytest.mark.parametrize("func", [fn.boom, fn.async_boom], ids=["sync", "async"])
def test_raising_function_keeps_type_and_traceback(func: Any) -> None:
    outcome = call_function(func, ("kaput",))
    assert not outcome.ok and isinstance(outcome.error, fn.TaskBoom) and str(outcome.error) == "kaput"
    assert outcome.traceback is not None and "TaskBoom: kaput" in outcome.traceback
    assert func.__name__ in outcome.traceback, "the traceback reaches into the function"


def test_system_exit_is_the_task_failure() -> None:
    def leave() -> None:
        raise SystemExit(3)

    outcome = call_function(leave)
    assert isinstance(outcome.error, SystemExit)


def test_call_control_cancels_an_async_call_from_another_thread() -> None:
    control = CallControl()
    result: list[Outcome] = []
    worker = threading.Thread(target=lambda: result.append(call_function(fn.async_sleep, (60,), None, control)))
    worker.start()
    threading.Timer(0.2, control.cancel).start()
    worker.join(30)
    assert not worker.is_alive()
    assert isinstance(result[0].error, asyncio.CancelledError)
    cancelled_first = CallControl()
    cancelled_first.cancel()
    assert isinstance(call_function(fn.async_sleep, (60,), None, cancelled_first).error, asyncio.CancelledError)


# ------------------------------------------------------------------ packing
def test_pack_call_round_trip() -> None:
    offset = 10
    ok = Outcome.unpack(call_packed(pack_call(lambda x, y=0: x + y + offset, (1,), {"y": 2}, uid="t1")))
    assert ok.ok and ok.value == 13
    failed = Outcome.unpack(call_packed(pack_call(fn.boom, ("remote",))))
    assert isinstance(failed.error, fn.TaskBoom) and "remote" in str(failed.error) and "TaskBoom" in (failed.traceback or "")
    async_ok = Outcome.unpack(call_packed(pack_call(fn.async_add, (20, 22))))
    assert async_ok.value == 42


def test_unpicklable_value_or_exception_still_packs() -> None:
    value = Outcome.unpack(call_packed(pack_call(return_lock)))
    assert isinstance(value.error, TypeError) and "cannot be sent back" in str(value.error) and "lock" in str(value.error)
    error = Outcome.unpack(call_packed(pack_call(raise_unpicklable)))
    assert isinstance(error.error, RuntimeError)
    assert "Unpicklable" in str(error.error) and "lock inside" in str(error.error) and "cannot be pickled" in str(error.error)
    assert "Unpicklable" in (error.traceback or ""), "the original traceback text survives"


def test_executable_outcome_round_trip() -> None:
    back = Outcome.unpack(Outcome(exit_code=2, stdout="o", stderr="e").pack())
    assert (back.exit_code, back.stdout, back.stderr, back.ok) == (2, "o", "e", False)
    assert "exit_code=2" in repr(back)


def test_unpack_refuses_other_payloads() -> None:
    import cloudpickle

    with pytest.raises(TypeError, match="Outcome"):
        Outcome.unpack(cloudpickle.dumps({"not": "an outcome"}))


def test_payload_that_cannot_be_unpacked_is_the_task_failure() -> None:
    outcome = Outcome.unpack(call_packed(b"not a pickle"))
    assert outcome.error is not None and not outcome.ok


@pytest.mark.parametrize(
    ("args", "kwargs", "where"),
    [
        ((1, threading.Lock()), {}, "args[1]"),
        ((), {"k": threading.Lock()}, "kwargs['k']"),
    ],
)
def test_pack_call_names_what_cannot_be_pickled(args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> None:
    with pytest.raises(TypeError) as info:
        pack_call(fn.echo, args, kwargs, uid="task.lock")
    assert "task.lock" in str(info.value) and where in str(info.value)


# ------------------------------------------------------------------ the host
def test_core_count_is_within_the_affinity_set() -> None:
    n = core_count()
    assert isinstance(n, int) and 1 <= n <= len(os.sched_getaffinity(0))
