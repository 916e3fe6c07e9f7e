"""Function tasks on Dragon: packing one task's call on the client, and what a
Dragon process runs for it. The process side imports only the standard library
and RHAPSODY's engine helpers (no Dragon, nothing heavy)."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any

from rhapsody.engine.calls import call_packed, pack_call
from rhapsody.engine.outcome import Outcome
from rhapsody.errors import BackendError

if TYPE_CHECKING:
    from rhapsody.engine.handle import TaskHandle


def pack(handle: TaskHandle) -> bytes | None:
    """The packed call of a function task; None when it cannot be pickled, and
    then that task alone has FAILED, naming the argument that could not."""
    task: Any = handle.task
    try:
        return pack_call(task.function, task.args, task.kwargs, task.uid)
    except TypeError as exc:
        handle.failed(exc)
        return None


def finish_packed(handle: TaskHandle, packed: bytes, timeout: float | None = None) -> None:
    """End a task as the packed `Outcome` from its Dragon process says.
    ``timeout``: the task's Batch timeout, whose private exception type
    (raised inside the call) becomes a plain `TimeoutError` saying so."""
    try:
        outcome = Outcome.unpack(packed)
    except Exception as exc:  # noqa: BLE001 - e.g. the value's module is missing here
        handle.failed(BackendError(f"task {handle.uid}: its result could not be read back: {type(exc).__name__}: {exc}"))
        return
    if timeout is not None and isinstance(outcome.error, TimeoutError) and type(outcome.error).__module__.startswith("dragon"):
        error = TimeoutError(f"task {handle.uid}: Dragon Batch stopped it at its timeout of {timeout:g} s")
        handle.failed(error, stdout=outcome.stdout, stderr=outcome.stderr)
        return
    handle.finish(outcome)


# ------------------------------------------- V1, and V3 with a template: one Dragon process per call
def process_main(payload: bytes, result_path: str, started_mark: str | None = None) -> None:
    """One function task (or one rank of it) in a Dragon process of its own.
    The packed `Outcome` goes to ``result_path`` (written whole, then renamed
    into place), which the client reads once the process has exited: no queue
    to attach to here, none to poll there. ``started_mark``: a file to create
    first (V3: Batch has no "started" event), saying where the call runs."""
    if started_mark is not None:
        write_mark(started_mark)
    data = call_packed(payload)
    tmp = f"{result_path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, result_path)


def finish_ranks(handle: TaskHandle, result_paths: list[str], codes: list[int]) -> None:
    """End a function task whose ranks ran as Dragon processes, from the
    outcomes they left (`process_main`) and their exit codes: one rank's
    outcome as it is; several ranks' values as a list, or the first failure."""
    outcomes = [read_outcome(path) for path in result_paths]
    if any(o is None for o in outcomes):
        handle.lost(f"its Dragon process exited with {codes} before returning a result")
        return
    if len(outcomes) == 1:
        handle.finish(outcomes[0])  # type: ignore[arg-type]
        return
    failed = next((o for o in outcomes if o is not None and o.error is not None), None)
    if failed is not None:
        handle.finish(failed)
    else:
        handle.done([o.value for o in outcomes if o is not None])


def read_outcome(result_path: str) -> Outcome | None:
    """What `process_main` left at ``result_path``, or None if it left nothing."""
    try:
        with open(result_path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:
        return Outcome.unpack(data)
    except Exception:  # noqa: BLE001 - a half-written or foreign file: no result
        return None


# ---------------------------------------------------------------- V3: a Batch function task
def batch_main(payload: bytes, started_mark: str) -> bytes:
    """A Batch function task. Batch has no "started" event: the mark file
    tells the client the call began, and where."""
    write_mark(started_mark)
    return call_packed(payload)


def write_mark(path: str) -> None:
    """The started mark: ``<host>/pid <pid>`` and a newline (the reader takes
    a mark without its newline as not written yet)."""
    with contextlib.suppress(OSError), open(path, "w") as fh:
        fh.write(f"{socket.gethostname()}/pid {os.getpid()}\n")


def read_mark(path: str) -> str | None:
    """Where the call of a started mark runs; None until the mark is written."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None
    return text.strip() if text.endswith("\n") and text.strip() else None
