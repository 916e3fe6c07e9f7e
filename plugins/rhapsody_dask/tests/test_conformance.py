"""The Dask backend against the shared conformance suite, on a real two-worker
LocalCluster (separate worker processes, one thread each) that the backend owns."""

from __future__ import annotations

from rhapsody.testing import BackendConformance, WorkerLossChecks
from rhapsody_dask.backend import DaskExecutionBackend


class TestDaskLocalClusterConformance(BackendConformance, WorkerLossChecks):
    samples_resources = True
    reports_worker = True
    concurrency = 2
    burst_size = 1000
    # a worker lost before the task's RUNNING event reached the client is not charged to
    # the task (the engine requeues it): give the event time to arrive on a loaded box
    kill_after = 4.0

    def make_backend(self) -> DaskExecutionBackend:
        return DaskExecutionBackend(resources={"n_workers": self.concurrency, "threads_per_worker": 1}, name="dask")
