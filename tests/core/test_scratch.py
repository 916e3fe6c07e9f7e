"""An engine's scratch folder is gone after its program ends, also when the
program is killed with SIGKILL (real processes, real kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rhapsody.engine.scratch import AFTERMATH, ScratchFolder

PROGRAM = """
import sys, time
from rhapsody.engine.scratch import ScratchFolder
folder = ScratchFolder("rhapsody-test-scratch-")
open(folder.path + "/data", "w").write("x")
print(folder.path, flush=True)
time.sleep(600)
"""


def _gone_within(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not path.exists():
            return True
        time.sleep(0.1)
    return False


def test_removed_when_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    folder = ScratchFolder("rhapsody-test-scratch-")
    assert Path(folder.path).parent == tmp_path and Path(folder.path).is_dir()
    (Path(folder.path) / "data").write_text("x")
    t0 = time.monotonic()
    folder.remove()
    assert time.monotonic() - t0 < 3, "a clean end does not wait for the guard's aftermath"
    assert not Path(folder.path).exists()
    folder.remove()  # again: nothing happens
    assert list(tmp_path.iterdir()) == []


def test_removed_when_the_program_is_killed(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM], env=env, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        path = Path(proc.stdout.readline().decode().strip())
        assert path.parent == tmp_path and (path / "data").exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert _gone_within(path, 10), "the guard did not remove the folder of a killed program"
    assert list(tmp_path.iterdir()) == []
    # the guard itself ends after its aftermath: no process of ours stays
    time.sleep(AFTERMATH + 2)
    mine = subprocess.run(["pgrep", "-f", f"rhapsody.engine.scratch {path}"], capture_output=True, text=True)
    assert mine.stdout.strip() == "", f"the guard is still running: {mine.stdout}"
