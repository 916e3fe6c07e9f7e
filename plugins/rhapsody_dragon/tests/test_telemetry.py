"""Telemetry (rhapsody-telemetry) of a Session on the real Dragon engines,
under the launcher: task spans, counts, resource samples of the node."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path

import pytest

from rhapsody import ComputeTask
from rhapsody.testing import tasks as fn
from rhapsody_dragon.pool import DragonPoolExecutionBackend
from rhapsody_dragon.processes import DragonProcessExecutionBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "rhapsody_telemetry" / "tests"))
from engine_run import check_run, telemetry_run


def _tasks() -> list[ComputeTask]:
    ok = [ComputeTask(function=fn.add, args=(i, 1)) for i in range(6)] + [ComputeTask(executable="/bin/true")]
    return [*ok, ComputeTask(function=fn.getpid), ComputeTask(function=fn.boom)]


@pytest.mark.parametrize("kind", ["dragon_v2", "dragon_v1"])
def test_dragon_session_telemetry(kind: str, tmp_path: Path) -> None:
    """Each span names where its task ran: V2, the pool worker process (host
    and pid: the pid a task sees); V1, the task's own Dragon process (host and
    puid: one per task)."""
    engine = DragonPoolExecutionBackend if kind == "dragon_v2" else DragonProcessExecutionBackend
    backend = engine(name=kind, num_workers=2)
    tasks = _tasks()
    telemetry, samples = asyncio.run(telemetry_run(backend, tmp_path, tasks))
    host = re.escape(socket.gethostname())
    pattern = rf"{host}/pid \d+" if kind == "dragon_v2" else rf"{host}/puid \d+"
    workers = check_run(telemetry, samples, kind, done=8, failed=1, error_type="TaskBoom", worker=pattern)
    if kind == "dragon_v2":
        functions = {w for uid, w in workers.items() if uid != tasks[6].uid}  # the executable runs in a child of a worker
        assert 1 <= len(functions) <= 2, workers  # two worker processes
        assert workers[tasks[7].uid] == f"{socket.gethostname()}/pid {tasks[7].return_value}"
    else:
        assert len(set(workers.values())) == len(tasks), workers  # a Dragon process per task
