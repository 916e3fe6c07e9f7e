"""Code that runs inside the Dask workers.

The client pickles these functions by reference, so ``rhapsody-dask`` must be
installed wherever the workers run (as any library a Dask task uses). This module
imports neither ``rhapsody`` nor anything heavy at import time.

A task announces that it started executing by logging an event on the
backend's topic (``Worker.log_event``, batched per worker every few ms); the
client subscribed to that topic and turns it into RUNNING. Executables run as child processes in their own session
(process group), registered by task uid so `kill` can end the whole tree.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import signal
import subprocess
import threading
import time
from typing import Any

_lock = threading.Lock()
_procs: dict[str, subprocess.Popen[Any]] = {}
# uids cancelled before their process started; bounded: tasks cancelled while
# still queued in the scheduler never reach the worker to consume their entry
_cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()
_CANCELLED_MAX = 10_000

CANCELLED = "rhapsody-dask:cancelled"


#: how long a worker holds RUNNING announcements before sending them as one event
ANNOUNCE_DELAY = 0.005
_announce_lock = threading.Lock()
_STALE = 2.0  # seconds after which an unflushed slot is considered lost
# id(worker) -> (worker, {topic: [uid, ...]}, armed at) waiting for the next flush
_pending: dict[int, tuple[Any, dict[str, list[str]], float]] = {}


def _announce(topic: str, uid: str) -> Any:
    """Tell the client this task is executing now (and on which worker);
    returns the worker (None outside Dask) for `_retract`.

    Announcements are buffered per worker and sent as one event per topic
    ``ANNOUNCE_DELAY`` after the first of them: one message for many tasks. A
    task that ends before that is taken out again (`_retract`): its result
    carries the news, the client reports RUNNING just before it, and no extra
    message delays the result in Dask's batched worker -> scheduler -> client
    streams."""
    try:
        from distributed import get_worker  # noqa: PLC0415 - present in every worker

        worker = get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker (direct call)
        return None
    now = time.monotonic()
    with _announce_lock:
        slot = _pending.get(id(worker))
        if slot is not None and slot[0] is worker:
            slot[1].setdefault(topic, []).append(uid)
            if now - slot[2] < _STALE:
                return worker
            # overdue: its timer may be lost; keep what it holds and arm again
            _pending[id(worker)] = (worker, slot[1], now)
        else:  # none yet, or one left by a closed worker that had the same id
            _pending[id(worker)] = (worker, {topic: [uid]}, now)
    # first announcement of this window: arm the flush on the worker's event loop
    worker.loop.add_callback(worker.loop.call_later, ANNOUNCE_DELAY, _flush, worker)
    return worker


def _retract(worker: Any, topic: str, uid: str) -> None:
    """The task ended before its announcement went out: do not send it."""
    if worker is None:
        return
    with _announce_lock:
        slot = _pending.get(id(worker))
        if slot is not None:
            uids = slot[1].get(topic)
            if uids and uid in uids:
                uids.remove(uid)


def _flush(worker: Any) -> None:
    """Send the buffered announcements (runs on the worker's event loop)."""
    with _announce_lock:
        slot = _pending.get(id(worker))
        if slot is None or slot[0] is not worker:
            return
        del _pending[id(worker)]
    for topic, uids in slot[1].items():
        if uids:
            worker.log_event(topic, [worker.address, uids])


def run_function(topic: str, uid: str, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a sync or ``async def`` function; exceptions propagate to Dask
    unchanged (so Dask's ``retries=`` apply and the client sees the original)."""
    worker = _announce(topic, uid)
    try:
        if inspect.iscoroutinefunction(function):
            return asyncio.run(function(*args, **kwargs))
        result = function(*args, **kwargs)
        if inspect.iscoroutine(result):  # a sync callable that hands back a coroutine
            result = asyncio.run(result)
        return result
    finally:
        _retract(worker, topic, uid)


def _open_out(path: str | None) -> Any:
    return open(path, "w") if path else subprocess.PIPE


def run_executable(topic: str, uid: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one executable in its own process group; returns ``exit_code``,
    ``stdout``, ``stderr`` (text, or the file paths with ``capture_stdio``)."""
    worker = _announce(topic, uid)
    try:
        return _execute(uid, spec)
    finally:
        _retract(worker, topic, uid)


def _execute(uid: str, spec: dict[str, Any]) -> dict[str, Any]:
    out_path, err_path = spec.get("out_path"), spec.get("err_path")
    env = None
    if spec.get("env"):
        env = {**os.environ, **{str(k): str(v) for k, v in spec["env"].items()}}
    stdout_fh = _open_out(out_path)
    stderr_fh = _open_out(err_path)
    try:
        with _lock:
            if _cancelled.pop(uid, False) is None:
                return {"exit_code": None, "stdout": None, "stderr": None, "status": CANCELLED}
            try:
                proc = subprocess.Popen(
                    spec["command"],
                    shell=spec["shell"],
                    cwd=spec.get("cwd"),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout_fh,
                    stderr=stderr_fh,
                    text=True,
                    start_new_session=True,
                )
            except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
                what = spec["command"][0] if isinstance(spec["command"], list) else spec["command"]
                message = f"cannot run {what!r}: {type(exc).__name__}: {exc}\n"
                if err_path:
                    stderr_fh.write(message)
                code = 127 if isinstance(exc, FileNotFoundError) else 126
                return {"exit_code": code, "stdout": out_path or "", "stderr": err_path or message, "status": "ok"}
            _procs[uid] = proc
        try:
            out, err = proc.communicate()
        finally:
            with _lock:
                _procs.pop(uid, None)
        return {
            "exit_code": proc.returncode,
            "stdout": out_path if out_path else out,
            "stderr": err_path if err_path else err,
            "status": "ok",
        }
    finally:
        for fh in (stdout_fh, stderr_fh):
            if fh is not subprocess.PIPE:
                fh.close()


def kill(uids: list[str]) -> int:
    """Kill the process trees of tasks ``uids`` on this worker, or make sure
    they never start here. Run through ``Client.run``; returns how many
    processes were killed."""
    killed = 0
    for uid in uids:
        with _lock:
            proc = _procs.get(uid)
            if proc is None:
                _cancelled[uid] = None
                while len(_cancelled) > _CANCELLED_MAX:
                    _cancelled.popitem(last=False)
                continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass
    return killed
