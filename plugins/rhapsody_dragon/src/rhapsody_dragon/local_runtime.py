"""The Dragon runtime a plain ``python`` program starts for itself (no
``dragon`` launcher): started with a deadline, its connection details kept off
the program's stdout, and stopped so that nothing of it outlives the program.

Dragon's ``start_local_runtime`` runs ``dragon -s -a _runtime_head.py`` in a
session of its own; its head waits for a stop event. Stopping sets that event
and waits for the launcher; whatever of its process group is still there after
that is killed here, and the shared-memory segments and attach-info file of a
runtime that had to be killed are removed (a runtime that stops normally
removes its own). If the
program dies without stopping it, a guard process (`rhapsody_dragon.runtime_guard`)
does the same.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rhapsody.errors import BackendError
from rhapsody.log import get_logger
from rhapsody_dragon.runtime_guard import STOPPED, attach_record, end_runtime, group_members

#: seconds starting and attaching to a local runtime may take
START_TIMEOUT = 120.0
#: seconds a stopping runtime gets before what is left of it is killed
STOP_TIMEOUT = 30.0
#: seconds the guard gets to exit once told the runtime was stopped here
GUARD_PATIENCE = 5.0

_log = get_logger("rhapsody.dragon.runtime")


class OwnedRuntime:
    """A local Dragon runtime this process started and is attached to."""

    def __init__(self, handle: Any, launcher_pid: int, segment_prefix: str | None) -> None:
        self.handle, self.launcher_pid, self.segment_prefix = handle, launcher_pid, segment_prefix
        self.attach = _attach_record()
        self.guard = _start_guard(launcher_pid, segment_prefix, self.attach)

    @classmethod
    def start(cls, timeout: float) -> OwnedRuntime:
        from dragon.workflows.runtime import attach, start_local_runtime  # noqa: PLC0415

        _put_dragon_on_path()
        t0 = time.monotonic()
        try:
            with _runtime_info_hidden():
                local = start_local_runtime(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - Dragon raises RuntimeError / FileNotFoundError
            raise _start_error("start the local runtime", t0, timeout, exc) from None
        pid = local._proc.pid  # the launcher's pid (private in Dragon): the only handle on its process group
        try:
            handle = attach(timeout=max(1.0, timeout - (time.monotonic() - t0)), runtime=local)
        except Exception as exc:  # noqa: BLE001 - any failure: the runtime just started must not outlive it
            _end(pid, _mapped_segment_prefix())
            raise _start_error("attach to the local runtime", t0, timeout, exc) from None
        owned = cls(handle, pid, _mapped_segment_prefix())
        _log.info("runtime.started", launcher=pid, seconds=round(time.monotonic() - t0, 2))
        return owned

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the runtime; kill what is left of it after ``timeout`` s."""
        t0 = time.monotonic()
        try:
            self.handle.stop(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - what is left is killed below
            _log.warning("runtime.stop_failed", error=f"{type(exc).__name__}: {exc}")
        if group_members(self.launcher_pid):
            _log.warning("runtime.killed", launcher=self.launcher_pid, waited=round(time.monotonic() - t0, 1))
            _end(self.launcher_pid, self.segment_prefix, self.attach)
        else:
            _log.info("runtime.stopped", seconds=round(time.monotonic() - t0, 2))
        _release_guard(self.guard)


def _attach_record() -> tuple[str, str] | None:
    """The attach-info file the runtime just wrote, as `runtime_guard.attach_record`."""
    from dragon.infrastructure import facts  # noqa: PLC0415

    return attach_record(os.path.join(facts.attach_runtime_dir(), facts.ATTACH_INFO_FILENAME))


def _start_guard(launcher_pid: int, prefix: str | None, attach: tuple[str, str] | None) -> subprocess.Popen[bytes] | None:
    """The process that ends the runtime if this program dies without stopping
    it (see `rhapsody_dragon.runtime_guard`); None if it cannot start (logged)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "rhapsody_dragon.runtime_guard", str(launcher_pid), prefix or "", *(attach or ())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # outside the runtime's group and this program's terminal signals
        )
    except OSError as exc:
        _log.warning("runtime.guard_failed", error=f"{type(exc).__name__}: {exc}")
        return None


def _release_guard(guard: subprocess.Popen[bytes] | None) -> None:
    """Tell the guard the runtime was stopped here, and reap it."""
    if guard is None or guard.stdin is None:
        return
    try:
        guard.stdin.write(STOPPED)
        guard.stdin.close()
        guard.wait(GUARD_PATIENCE)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _log.warning("runtime.guard_stuck", pid=guard.pid, error=type(exc).__name__)
        guard.kill()


def _start_error(step: str, t0: float, timeout: float, exc: BaseException) -> BackendError:
    waited = time.monotonic() - t0
    return BackendError(f"dragon runtime: could not {step} (deadline {timeout:g} s, waited {waited:.1f} s): {type(exc).__name__}: {exc}")


def _put_dragon_on_path() -> None:
    """Dragon finds its ``dragon`` and ``dragon-config`` commands on PATH: a
    program run as ``venv/bin/python script.py`` without activating the venv
    has them next to its interpreter."""
    here = os.path.dirname(sys.executable)
    if shutil.which("dragon") is None and os.access(os.path.join(here, "dragon"), os.X_OK):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


class _DropRuntimeInfo(io.TextIOBase):
    """stdout without the ``info={...}`` line ``start_local_runtime`` prints
    (it holds the runtime's attach token)."""

    def __init__(self, out: Any) -> None:
        self._out, self._dropped = out, False

    def write(self, text: str) -> int:
        if text.startswith("info=") or (self._dropped and text == "\n"):
            self._dropped = text != "\n"
            return len(text)
        self._dropped = False
        return int(self._out.write(text))

    def flush(self) -> None:
        self._out.flush()


@contextlib.contextmanager
def _runtime_info_hidden() -> Any:
    real = sys.stdout
    sys.stdout = _DropRuntimeInfo(real)
    try:
        yield
    finally:
        if isinstance(sys.stdout, _DropRuntimeInfo):
            sys.stdout = real


def _mapped_segment_prefix() -> str | None:
    """The name prefix of the runtime's /dev/shm segments (``DD0719`` of
    ``DD0719def0D``), read from this attached process's memory map."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    match = re.search(r"/dev/shm/(DD\d+)def\d", maps)
    return match.group(1) if match else None


def _end(launcher_pid: int, prefix: str | None, attach: tuple[str, str] | None = None) -> None:
    """Kill the runtime's process group and remove its segments (those its
    processes had mapped too: `runtime_guard.end_runtime`) and its attach-info
    file, then reap the launcher, this program's child."""
    end_runtime(launcher_pid, prefix or "", attach)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(launcher_pid, os.WNOHANG)
