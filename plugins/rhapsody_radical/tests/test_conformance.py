"""The shared conformance suite against one real local.localhost pilot.

Sizing: raptor (1-core master + one 1-core worker) is started with the pilot
and holds two cores for the backend's whole life, so the pilot declares 4
cores (``local_cores=4``: oversubscribing this 2-core box on purpose) and
leaves ``concurrency = 2`` cores to executables. A local pilot launches more
than one rank only through an MPI launcher (``mpiexec``/``mpirun`` on PATH):
without one, a multi-rank task is refused."""

from __future__ import annotations

import shutil

from rhapsody.testing import BackendConformance, WorkerLossChecks
from rhapsody_radical.backend import RadicalExecutionBackend


class TestRadicalPilotConformance(BackendConformance, WorkerLossChecks):
    samples_resources = True
    reports_worker = True
    concurrency = 2
    burst_size = 100
    deadline = 300.0
    start_timeout = 120.0
    runs_multi_rank = bool(shutil.which("mpiexec") or shutil.which("mpirun"))

    def make_backend(self) -> RadicalExecutionBackend:
        return RadicalExecutionBackend(
            resources={"resource": "local.localhost", "runtime": 45, "cores": 4},
            local_cores=4,
            raptor={"eager": True},
        )
