"""The sweep RP's rank script runs after a 1-rank program
(`rhapsody_radical.descriptions.STOP_LEFTOVERS`): it stops what the program
left running in its process group and nothing else. Run here in a process
group of its own, as RP runs a task's script, with and without the pid mark
RP's pre_exec takes before the program (`MARK_PIDS`), and with marks the sweep
must not trust (a pid counter that wrapped, a task that ran long). (An earlier
sweep, built of command substitutions and pipelines, found its own helper
processes, signalled them and slept 0.2 s after every task.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from rhapsody_radical.descriptions import MARK_PIDS, STOP_LEFTOVERS

SHELLS = ["bash", "sh"]  # RP writes bash scripts; the sweep is plain POSIX sh
# what runs before the program, and after it (before the sweep)
MARKS = {
    "no mark": ("", ""),
    "mark": (MARK_PIDS, ""),
    # the counter now below the mark: it wrapped, so the leftover's pid is no guide
    "wrapped counter": (f"{MARK_PIDS}; rh_n=999999999", ""),
    # marked long ago, the counter gone all the way round unnoticed: the leftover's pid is below the mark
    "long task": ("", f"{MARK_PIDS}; rh_t=1.00"),
}


def _in_own_group(shell: str, script: str) -> str:
    done = subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60, start_new_session=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _script(mark: tuple[str, str], program: str, then: str) -> str:
    before, after = mark
    return "\n".join(line for line in (before, program, after, STOP_LEFTOVERS, then) if line)


@pytest.mark.parametrize("mark", MARKS.values(), ids=MARKS.keys())
@pytest.mark.parametrize("shell", SHELLS)
def test_a_program_that_left_nothing_leaves_the_sweep_nothing_to_stop(shell: str, mark: tuple[str, str]) -> None:
    assert _in_own_group(shell, _script(mark, "/bin/true", 'echo "left=[$rh_l]"')) == "left=[]"


@pytest.mark.parametrize("mark", MARKS.values(), ids=MARKS.keys())
@pytest.mark.parametrize("shell", SHELLS)
def test_what_the_program_left_running_is_stopped(shell: str, mark: tuple[str, str], tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    out = _in_own_group(shell, _script(mark, f"sleep 300 & echo $! > {pid_file}", 'echo "left=[$rh_l]"'))
    pid = int(pid_file.read_text())
    assert out == f"left=[ {pid}]"
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and (Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"):
        assert time.monotonic() < deadline, f"the left-over sleep {pid} still runs 30 s after the sweep"
        time.sleep(0.05)
