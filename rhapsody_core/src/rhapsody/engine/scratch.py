"""A temporary folder an engine makes for one run, gone even if the program is killed.

An engine's own scratch space (a Dask LocalCluster's spill and worker folders,
say) is removed when the engine stops. A program killed with SIGKILL never gets
there, so `ScratchFolder` leaves a small guard process behind it, in a session
of its own, holding the read end of a pipe from the program. At EOF, which is
the program's end however it came, the guard removes the folder if it is
still there, and again for a while, as processes that die with the program
may still write to it.

The guard is ``python -m rhapsody.engine.scratch <folder>``: standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

#: seconds the guard goes on removing the folder after the program's end (its
#: workers die with it, but may write a last file before they do)
AFTERMATH = 10.0
#: seconds `ScratchFolder.remove` waits for the guard to exit
GUARD_EXIT = 5.0


class ScratchFolder:
    """A new folder under the system's temp folder (``TMPDIR``), named
    ``<prefix>…``. Call `remove` when done; it is removed by its guard if the
    program ends first."""

    def __init__(self, prefix: str) -> None:
        self.path = tempfile.mkdtemp(prefix=prefix)
        read_end, self._pipe = os.pipe()
        try:
            self._guard: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", "rhapsody.engine.scratch", self.path],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a signal to the program's group does not end it first
                close_fds=True,
            )
        except BaseException:
            os.close(self._pipe)
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        finally:
            os.close(read_end)

    def remove(self) -> None:
        """Remove the folder now, and let the guard go. Idempotent."""
        shutil.rmtree(self.path, ignore_errors=True)
        guard, self._guard = self._guard, None
        if guard is None:
            return
        os.close(self._pipe)
        try:
            guard.wait(GUARD_EXIT)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait(GUARD_EXIT)


def _guard(folder: str) -> None:
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):  # nothing is written: this returns at EOF
            pass
    if not os.path.exists(folder):  # `ScratchFolder.remove` did it: a clean end
        return
    deadline = time.monotonic() + AFTERMATH
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        if time.monotonic() > deadline:
            return
        time.sleep(1.0)


if __name__ == "__main__":
    _guard(sys.argv[1])
