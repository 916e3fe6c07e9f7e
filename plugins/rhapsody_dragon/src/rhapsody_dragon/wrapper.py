"""Executables on Dragon (V1 processes, V3 Batch process tasks), each rank in a
process group of its own, through a small ``/bin/sh`` wrapper.

Why a wrapper: Dragon's local services reap the processes they start with
``waitpid(0)``, which sees only children in their own process group, so the
process Dragon starts cannot move to a session of its own (Dragon would never
see it exit; measured: ``setsid prog`` started directly was never joined).
And a program's background child that inherits Dragon's output pipe kept the
task open (``sh -c 'sleep 300 & echo started'`` was never reported as exited).
So Dragon starts the wrapper, which

- starts the program with ``setsid`` (a session, hence a process group, of its
  own: its pgid is its pid), stdin from /dev/null, output to files;
- writes ``<pid> <host>`` as the first line of the rank's pid file: the group
  a cancel signals (V3 also reads it as the "started" mark);
- waits for the program, then stops what it left running in its group
  (SIGTERM, SIGKILL 0.2 s later), writes the program's exit code (128 + n
  for a program killed by signal n, the shell's convention) as the pid
  file's second line and exits with it.

That second line records how a rank ended without Dragon's word for it:
Batch in dragonhpc 0.15 can fail a process task after its processes ended
(closing the ProcessGroup raised "ProcessGroup manager is not in state
State.DEAD" in CI), and V3 then reads the outcome from here. The wrapper
writes both lines through one descriptor opened at its start, so a wrapper
that outlives its task's cleanup (a cancel) writes into the removed file
and creates none.

Costs two execs (``sh``, ``setsid``) per rank on top of the program's own.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import threading
import time

from rhapsody.engine.launch import LaunchSpec
from rhapsody.engine.outcome import Outcome
from rhapsody.engine.process import KILL_GRACE, signal_group

SHELL = "/bin/sh"
SETSID = shutil.which("setsid") or "/usr/bin/setsid"

# $0: the pid file (descriptor 3, which the program does not inherit); $1, $2: the stdout and
# stderr files; then the program and its arguments. The wrapper's own output (a shell's
# "Terminated" notice) goes nowhere.
SCRIPT = (
    'o=$1 e=$2; shift 2; exec </dev/null >/dev/null 2>&1 3>"$0"; '
    f'{shlex.quote(SETSID)} "$@" >"$o" 2>"$e" 3>&- & p=$!; '
    'read -r h </proc/sys/kernel/hostname; echo "$p $h" >&3; '
    "wait $p; r=$?; "
    "if kill -TERM -$p 2>/dev/null; then sleep 0.2; kill -KILL -$p 2>/dev/null; fi; "
    "echo $r >&3; exit $r"
)

#: seconds a stop waits for a just-started rank to write its pid file
PID_PATIENCE = 5.0


def setsid_problem() -> str | None:
    """Why executables cannot be wrapped here, or None."""
    if not os.access(SETSID, os.X_OK):
        return f"the `setsid` program (util-linux) is needed to run executables and was not found at {SETSID}"
    return None


class WrappedRanks:
    """The ranks of one executable task as the wrapper runs them: their files
    under ``base`` and their process groups."""

    def __init__(self, spec: LaunchSpec, base: str) -> None:
        self.spec, self.base = spec, base
        self._host = socket.gethostname()

    def _path(self, rank: int, suffix: str) -> str:
        return f"{self.base}.{rank}.{suffix}"

    def _outputs(self, rank: int) -> tuple[str, str]:
        spec = self.spec
        if spec.ranks == 1 and spec.stdout_path and spec.stderr_path:
            return spec.stdout_path, spec.stderr_path  # one rank writes the capture files itself
        return self._path(rank, "out"), self._path(rank, "err")

    def command(self, rank: int) -> tuple[str, list[str]]:
        """What Dragon starts for ``rank``: target and arguments."""
        out, err = self._outputs(rank)
        return SHELL, ["-c", SCRIPT, self._path(rank, "pid"), out, err, *self.spec.argv]

    def _lines(self, rank: int) -> list[list[str]]:
        """The whole lines of ``rank``'s pid file, split into fields: ``[pid,
        host]`` once its program started, then ``[exit code]`` once it ended."""
        text = _read(self._path(rank, "pid"))
        return [line.split() for line in text.split("\n")[:-1]]  # the last piece is not a whole line yet

    def where(self) -> str | None:
        """``<host>/pid <pid>`` of rank 0's program; None until it started."""
        lines = self._lines(0)
        return f"{lines[0][1]}/pid {lines[0][0]}" if lines and len(lines[0]) == 2 else None

    def group(self, rank: int) -> int | None:
        """The process group of ``rank`` when it runs on this host and has started."""
        lines = self._lines(rank)
        if not lines or len(lines[0]) != 2 or not lines[0][0].isdigit():
            return None
        pid, host = lines[0]
        return int(pid) if host == self._host else None

    def stop(self, ended: threading.Event, grace: float = KILL_GRACE) -> bool:
        """SIGTERM every rank's group, SIGKILL ``grace`` s later, waiting up to
        `PID_PATIENCE` for ranks that are starting (not past ``ended``). False
        when some rank's group could not be signalled from here."""
        pending = set(range(self.spec.ranks))
        groups: list[int] = []
        deadline = time.monotonic() + PID_PATIENCE
        while pending:
            for rank in sorted(pending):
                pgid = self.group(rank)
                if pgid is not None:
                    signal_group(pgid, signal.SIGTERM)
                    groups.append(pgid)
                    pending.discard(rank)
            if not pending or ended.is_set() or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if groups:
            timer = threading.Timer(grace, _kill_groups, (groups,))
            timer.daemon = True
            timer.start()
        return not pending

    def recorded_codes(self) -> list[int] | None:
        """Every rank's exit code as its wrapper wrote it; None while some rank
        has not written one (still running, never started, or killed)."""
        codes = []
        for rank in range(self.spec.ranks):
            lines = self._lines(rank)
            if len(lines) < 2 or len(lines[1]) != 1 or not lines[1][0].isdigit():
                return None
            codes.append(int(lines[1][0]))
        return codes

    def outcome(self, codes: list[int]) -> Outcome:
        """How the task ended, from its ranks' exit codes and output files."""
        spec = self.spec
        exit_code = next((c for c in codes if c != 0), 0)
        if spec.ranks == 1 and spec.stdout_path:
            return Outcome(exit_code=exit_code, stdout=spec.stdout_path, stderr=spec.stderr_path or "")
        texts = []
        for suffix in ("out", "err"):
            texts.append("".join(_read(self._path(rank, suffix)) for rank in range(spec.ranks)))
        if spec.stdout_path and spec.stderr_path:  # ranks' output, in rank order, into the capture files
            for path, text in zip((spec.stdout_path, spec.stderr_path), texts, strict=True):
                with open(path, "w") as fh:
                    fh.write(text)
            return Outcome(exit_code=exit_code, stdout=spec.stdout_path, stderr=spec.stderr_path)
        return Outcome(exit_code=exit_code, stdout=texts[0], stderr=texts[1])

    def cleanup(self) -> None:
        for rank in range(self.spec.ranks):
            for suffix in ("pid", "out", "err"):
                with contextlib.suppress(OSError):
                    os.unlink(self._path(rank, suffix))


def _kill_groups(groups: list[int]) -> None:
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""
