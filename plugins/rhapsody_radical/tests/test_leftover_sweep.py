"""The sweep RP's rank script runs after a 1-rank program
(`rhapsody_radical.descriptions.STOP_LEFTOVERS`): it stops what the program
left running in its process group and nothing else. Run here in a process
group of its own, as RP runs a task's script. (An earlier sweep, built of
command substitutions and pipelines, found its own helper processes, signalled
them and slept 0.2 s after every task.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from rhapsody_radical.descriptions import STOP_LEFTOVERS

SHELLS = ["bash", "sh"]  # RP writes bash scripts; the sweep is plain POSIX sh


def _in_own_group(shell: str, script: str) -> str:
    done = subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60, start_new_session=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_program_that_left_nothing_leaves_the_sweep_nothing_to_stop(shell: str) -> None:
    assert _in_own_group(shell, f'/bin/true; {STOP_LEFTOVERS}; echo "left=[$rh_l]"') == "left=[]"


@pytest.mark.parametrize("shell", SHELLS)
def test_what_the_program_left_running_is_stopped(shell: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    out = _in_own_group(shell, f'sleep 300 & echo $! > {pid_file}; {STOP_LEFTOVERS}; echo "left=[$rh_l]"')
    pid = int(pid_file.read_text())
    assert out == f"left=[ {pid}]"
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and (Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"):
        assert time.monotonic() < deadline, f"the left-over sleep {pid} still runs 30 s after the sweep"
        time.sleep(0.05)
