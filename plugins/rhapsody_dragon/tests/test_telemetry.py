"""Telemetry (rhapsody-telemetry) of a Session on the real Dragon engines,
under the launcher: task spans, counts, resource samples of the node."""

from __future__ import annotations

import asyncio
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
    return [*ok, ComputeTask(function=fn.boom)]


@pytest.mark.parametrize("kind", ["dragon_v2", "dragon_v1"])
def test_dragon_session_telemetry(kind: str, tmp_path: Path) -> None:
    engine = DragonPoolExecutionBackend if kind == "dragon_v2" else DragonProcessExecutionBackend
    backend = engine(name=kind, num_workers=2)
    telemetry, samples = asyncio.run(telemetry_run(backend, tmp_path, _tasks()))
    check_run(telemetry, samples, kind, done=7, failed=1, error_type="TaskBoom")
