"""Code that runs inside Dragon processes (V1 function processes, V2 pool
workers, V3 Batch tasks). Importable without Dragon; imports nothing heavy."""

from __future__ import annotations

import asyncio
import inspect
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

import cloudpickle

# A result travels as ("ok", pickled value, None) or ("err", pickled exception, traceback text).


def call_payload(payload: bytes) -> tuple[str, bytes, str | None]:
    """Run a cloudpickled ``(fn, args, kwargs)``; sync or ``async def``."""
    try:
        fn, args, kwargs = cloudpickle.loads(payload)
        if inspect.iscoroutinefunction(fn):
            value = asyncio.run(fn(*args, **kwargs))
        else:
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
    except BaseException as exc:  # noqa: BLE001 - the task's own failure travels back
        return "err", _dump_exception(exc), traceback.format_exc()
    try:
        return "ok", cloudpickle.dumps(value), None
    except Exception as exc:  # noqa: BLE001
        err = TypeError(f"the function's return value of type {type(value).__name__} cannot be pickled: {exc}")
        return "err", _dump_exception(err), traceback.format_exc()


async def _await(aw: Any) -> Any:
    return await aw


def _dump_exception(exc: BaseException) -> bytes:
    try:
        data = cloudpickle.dumps(exc)
        cloudpickle.loads(data)  # an exception that pickles but cannot be rebuilt is no use
        return data
    except Exception:  # noqa: BLE001
        return cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    """Children of a pool worker die with it (the worker is SIGKILLed on cancel)."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def run_command(argv: list[str], cwd: str | None, env: dict[str, str] | None) -> tuple[int | None, str, str]:
    """Run an executable, return (exit code, stdout, stderr). A command that
    cannot start gives exit code None and the reason in stderr."""
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", preexec_fn=_set_pdeathsig)
    except OSError as exc:
        return None, "", f"cannot start {argv[0]!r}: {exc}"
    out, err = proc.communicate()
    return proc.returncode, out, err


# ---------------------------------------------------------------- V1 function process
def v1_function_main(payload: bytes, results: Any, uid: str, rank: int) -> None:
    """One task (or one rank of it) in its own Dragon process; the result goes to ``results``."""
    status, data, tb = call_payload(payload)
    results.put((uid, rank, status, data, tb))


# ---------------------------------------------------------------- V3 Batch task
def v3_function_main(payload: bytes, marker: str) -> tuple[str, bytes, str | None]:
    """Batch function task: record the start (Batch has no 'running' event), run."""
    _touch(marker)
    return call_payload(payload)


def _touch(path: str) -> None:
    try:
        with open(path, "w"):
            pass
    except OSError:
        pass


# ---------------------------------------------------------------- V2 pool worker
def pool_worker(inq: Any, outq: Any, wid: int) -> None:
    """A V2 pool worker. Messages in: ("tasks", [spec, ...]), ("cancel", uid),
    None (stop). Events out, in batches: ("start", uid), ("done", uid, result).
    A spec is ("f", uid, payload) or ("x", uid, argv, cwd, env)."""
    local: deque[tuple[Any, ...]] = deque()
    canceled: set[str] = set()
    outbox: list[tuple[Any, ...]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def flush() -> None:
        with lock:
            if not outbox:
                return
            batch = outbox[:]
            outbox.clear()
            outq.put((wid, batch))

    def flusher() -> None:  # start events leave within a few ms even while a task runs
        while not stop.wait(0.005):
            flush()

    def emit(event: tuple[Any, ...]) -> None:
        with lock:
            outbox.append(event)

    def handle(msg: Any) -> bool:
        if msg is None:
            return False
        if msg[0] == "tasks":
            local.extend(msg[1])
        elif msg[0] == "cancel":
            canceled.add(msg[1])
        return True

    threading.Thread(target=flusher, daemon=True, name="rhapsody-flusher").start()
    running = True
    while running:
        if not local:
            flush()
            running = handle(inq.get())
        while running:  # apply everything that arrived meanwhile (cancels first of all)
            try:
                msg = inq.get(block=False)
            except queue.Empty:
                break
            except Exception:  # noqa: BLE001 - Dragon's own Empty
                break
            running = handle(msg)
        if not running or not local:
            continue
        spec = local.popleft()
        uid = spec[1]
        if uid in canceled:
            canceled.discard(uid)
            continue
        emit(("start", uid))
        if spec[0] == "f":
            result: Any = call_payload(spec[2])
        else:
            result = run_command(spec[2], spec[3], spec[4])
        emit(("done", uid, result))
    stop.set()
    flush()


def now() -> float:
    return time.monotonic()


if __name__ == "__main__":  # pragma: no cover
    sys.exit("rhapsody_dragon._worker is not a program")
