"""Telemetry (rhapsody-telemetry) of a Session on a real local.localhost
pilot: task spans and counts, resource samples of the pilot's node."""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

from rhapsody import ComputeTask
from rhapsody.testing.conformance import LoopRunner
from rhapsody_radical.backend import RadicalExecutionBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "rhapsody_telemetry" / "tests"))
from engine_run import check_run, telemetry_run


def test_pilot_session_telemetry(tmp_path: Path) -> None:
    backend = RadicalExecutionBackend(resources={"runtime": 10, "cores": 2})
    tasks = [ComputeTask(executable="/bin/echo", arguments=[str(i)]) for i in range(5)]
    tasks.append(ComputeTask(executable="/bin/sh", arguments=["-c", "exit 3"]))
    runner = LoopRunner(deadline=400.0)
    try:
        telemetry, samples = runner(telemetry_run(backend, tmp_path, tasks))
    finally:
        runner.close()
    host = re.escape(socket.gethostname())
    workers = check_run(
        telemetry, samples, "radical_pilot", done=5, failed=1, error_type="TaskExecutionError", worker=rf"pilot\.\d+@{host}"
    )
    assert all("@" in e.node_id for e in samples), [e.node_id for e in samples]  # <pilot uid>@<host>
    assert set(workers.values()) == {e.node_id for e in samples}  # the tasks ran on the pilot whose node was sampled
