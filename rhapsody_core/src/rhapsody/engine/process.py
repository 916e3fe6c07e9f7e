"""Running a `LaunchSpec` as local processes, wherever the engine runs it (the
client, a Dask worker, a Dragon process, a pilot agent). Standard library only.

Conventions, the same on every engine that uses this module:

- every rank runs in a session (process group) of its own, so one signal
  reaches everything the program started;
- output goes to files, never pipes: a background child that inherits the
  output cannot keep the task open, and large outputs cannot block;
- the task ends when its program exits (every rank); whatever it left running
  in its process group is stopped then, and the output written so far is kept;
- a program that cannot be started ends with exit code 127 (not found) or 126
  (found but not runnable, or the working directory is unusable) and a message
  in stderr naming the program or the directory, never the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import IO

from rhapsody.engine.launch import LaunchSpec
from rhapsody.engine.outcome import Outcome

#: seconds between SIGTERM and SIGKILL when a task is stopped
KILL_GRACE = 2.0
#: seconds a program's leftover children get between SIGTERM and SIGKILL after it exits
LEFTOVER_GRACE = 0.2

NOT_FOUND = 127
NOT_RUNNABLE = 126


def launch_failure(spec: LaunchSpec, exc: OSError) -> Outcome:
    """The outcome of a program that could not be started."""
    code = NOT_FOUND if isinstance(exc, FileNotFoundError) else NOT_RUNNABLE
    if spec.cwd is not None and exc.filename == spec.cwd:
        code = NOT_RUNNABLE
        reason = f"working directory {spec.cwd!r}: {_why(exc)}"
    else:
        reason = _why(exc)
    message = f"cannot run {spec.program!r}: {reason}"
    if spec.stderr_path:
        with contextlib.suppress(OSError), open(spec.stderr_path, "a") as fh:
            fh.write(message + "\n")
    return Outcome(exit_code=code, stdout=spec.stdout_path or "", stderr=spec.stderr_path or message)


def preflight(spec: LaunchSpec) -> Outcome | None:
    """For engines that launch natively (not through `Command`): the outcome a
    launch of ``spec`` would fail with here (program or working directory
    missing or unusable), else None. Same exit codes and messages as `Command`."""
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        missing = not os.path.exists(spec.cwd)
        exc: OSError = (FileNotFoundError if missing else NotADirectoryError)(errno.ENOENT if missing else errno.ENOTDIR, "", spec.cwd)
        return launch_failure(spec, exc)
    program = spec.argv[0]
    if os.sep in program:
        path = os.path.join(spec.cwd or os.getcwd(), program)
    else:
        search = spec.env.get("PATH", os.environ.get("PATH", os.defpath))
        path = shutil.which(program, mode=os.F_OK, path=search) or ""
    if not os.path.exists(path):
        return launch_failure(spec, FileNotFoundError(errno.ENOENT, "", program))
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return launch_failure(spec, PermissionError(errno.EACCES, "Permission denied", program))
    return None


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    return (exc.strerror or str(exc)).lower()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_groups(pgids: list[int]) -> None:
    for pgid in pgids:
        signal_group(pgid, signal.SIGKILL)


def sweep_group(pgid: int, grace: float = LEFTOVER_GRACE) -> None:
    """Stop what is left in a process group: SIGTERM, then SIGKILL after ``grace``."""
    if not group_alive(pgid):
        return
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    signal_group(pgid, signal.SIGKILL)


class Command:
    """One executable task's processes. `start`, then `wait` (blocking) or
    `wait_async` (on an event loop); `stop` from any thread ends it early."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.procs: list[subprocess.Popen[bytes]] = []
        self._outputs: list[tuple[IO[bytes], IO[bytes]]] = []
        self._stopped = False
        self._lock = threading.Lock()

    def start(self) -> Outcome | None:
        """Start every rank; None when they all started, else the failure
        outcome (ranks already started are stopped)."""
        with self._lock:
            if self._stopped:
                return Outcome(exit_code=-signal.SIGTERM, stdout="", stderr="")
            try:
                for rank in range(self.spec.ranks):
                    self.procs.append(self._spawn(rank))
            except OSError as exc:
                self._close_files()
                for proc in self.procs:
                    signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
                return launch_failure(self.spec, exc)
        return None

    def _spawn(self, rank: int) -> subprocess.Popen[bytes]:
        spec = self.spec
        out, err = self._output_files(rank)
        self._outputs.append((out, err))
        return subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=spec.environ(rank),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )

    def _output_files(self, rank: int) -> tuple[IO[bytes], IO[bytes]]:
        files = []
        for path in (self.spec.stdout_path, self.spec.stderr_path):
            if path and rank == 0:
                open(path, "wb").close()  # emptied once; then every rank appends, or one would overwrite another's output
            files.append(open(path, "ab") if path else tempfile.TemporaryFile())  # noqa: SIM115 - closed in _finish
        return files[0], files[1]

    def wait(self) -> Outcome:
        for proc in self.procs:
            proc.wait()
        return self._finish()

    async def wait_async(self) -> Outcome:
        loop = asyncio.get_running_loop()
        for proc in self.procs:
            await _exited(loop, proc)
        if any(group_alive(p.pid) for p in self.procs):
            await asyncio.to_thread(self._sweep)
        return self._finish()

    def stop(self, grace: float = KILL_GRACE) -> None:
        """SIGTERM every rank's process group now, SIGKILL after ``grace`` s.
        Does not wait: `wait` / `wait_async` return once they are gone."""
        with self._lock:
            self._stopped = True
            pgids = [p.pid for p in self.procs if p.returncode is None]
        for pgid in pgids:
            signal_group(pgid, signal.SIGTERM)
        if pgids:
            timer = threading.Timer(grace, _kill_groups, (pgids,))
            timer.daemon = True
            timer.start()

    def _sweep(self) -> None:
        for proc in self.procs:
            sweep_group(proc.pid)

    def _finish(self) -> Outcome:
        self._sweep()
        codes = [p.returncode for p in self.procs]
        exit_code = next((c for c in codes if c != 0), 0)
        if self.spec.stdout_path:
            stdout, stderr = self.spec.stdout_path, self.spec.stderr_path or ""
        else:
            stdout = "".join(_read(out) for out, _ in self._outputs)
            stderr = "".join(_read(err) for _, err in self._outputs)
        self._close_files()
        return Outcome(exit_code=exit_code, stdout=stdout, stderr=stderr)

    def _close_files(self) -> None:
        for pair in self._outputs:
            for fh in pair:
                fh.close()
        self._outputs = []


def _read(fh: IO[bytes]) -> str:
    if fh.closed:
        return ""
    fh.seek(0)
    return fh.read().decode("utf-8", errors="replace")


async def _exited(loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
    """Wait for ``proc`` to exit without a thread: a pidfd becomes readable
    when the process ends (Linux >= 5.3); elsewhere a thread waits."""
    if proc.poll() is not None:
        return
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        await asyncio.to_thread(proc.wait)
        return
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    proc.wait()


def run(spec: LaunchSpec) -> Outcome:
    """Start ``spec`` and wait for it: the whole launch, for engines whose
    worker runs one task at a time."""
    command = Command(spec)
    failure = command.start()
    return failure if failure is not None else command.wait()


class CommandTable:
    """Commands running in one worker process, by task uid, so that a cancel
    arriving on another thread (or before the task reached the worker) stops
    the right one. Thread-safe."""

    def __init__(self, remember: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Command] = {}
        self._stopped: dict[str, None] = {}  # uids stopped before they started (insertion-ordered, bounded)
        self._remember = remember

    def run(self, spec: LaunchSpec) -> Outcome | None:
        """`run` ``spec``; None if it was stopped before it started."""
        command = Command(spec)
        with self._lock:
            if self._stopped.pop(spec.uid, 0) is None:
                return None
            self._running[spec.uid] = command
        try:
            failure = command.start()
            return failure if failure is not None else command.wait()
        finally:
            with self._lock:
                self._running.pop(spec.uid, None)

    def stop(self, uid: str, grace: float = KILL_GRACE) -> bool:
        """Stop the command of ``uid``, or make sure it never starts here.
        True if a running command was signalled."""
        with self._lock:
            command = self._running.get(uid)
            if command is None:
                self._stopped[uid] = None
                while len(self._stopped) > self._remember:
                    del self._stopped[next(iter(self._stopped))]
                return False
        command.stop(grace)
        return True
