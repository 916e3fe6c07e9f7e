"""The concurrent backend against the shared conformance suite: a real thread
pool and real subprocesses."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

from rhapsody.testing import BackendConformance, WorkerLossChecks
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


class TestThreadPoolConformance(BackendConformance):
    samples_resources = True
    reports_worker = True
    concurrency = 2

    def make_backend(self) -> ConcurrentExecutionBackend:
        return ConcurrentExecutionBackend(name="concurrent", cores=self.concurrency)


class TestProcessPoolConformance(BackendConformance, WorkerLossChecks):
    samples_resources = True
    reports_worker = True
    concurrency = 2
    burst_size = 300
    absorbed_deaths = 1  # a broken pool's tasks are rerun alone once, to find which one broke it

    def make_backend(self) -> ConcurrentExecutionBackend:
        return ConcurrentExecutionBackend(name="procs", executor=ProcessPoolExecutor(max_workers=self.concurrency))
