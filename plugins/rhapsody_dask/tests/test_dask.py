"""Dask-specific behaviour on real Dask clusters: every constructor mode, bad
combinations, resource mapping and pass-through, lost workers, plugin import."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from rhapsody import BackendError, ComputeTask, ResourceError, Resources, Session, TaskState
from rhapsody.testing import LoopRunner
from rhapsody.testing import tasks as fn
from rhapsody_dask.backend import DaskConfigurationError, DaskExecutionBackend

DEADLINE = 120.0


async def wait_state(task: ComputeTask, state: TaskState, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while task.state is not state:
        assert not task.state.is_terminal, (task.state, task.exception)
        assert time.monotonic() < deadline, f"{task.uid} never reached {state}"
        await asyncio.sleep(0.02)


async def run_tasks(backend: DaskExecutionBackend, work_dir: Path, *tasks: ComputeTask) -> list[ComputeTask]:
    session = Session(backends=[backend], work_dir=work_dir)
    await session.submit_tasks(list(tasks))
    await session.wait_tasks(list(tasks), timeout=DEADLINE)
    await session.close()
    return list(tasks)


@pytest.fixture(scope="module")
def run() -> Iterator[LoopRunner]:
    runner = LoopRunner(DEADLINE)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def sync_cluster() -> Iterator[LocalCluster]:
    """A plain synchronous LocalCluster, as users create them (own loop thread)."""
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0")
    yield cluster
    cluster.close()


# ---------------------------------------------------------------- constructor modes
def test_sync_cluster_is_used_and_left_open(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    backend = DaskExecutionBackend(cluster=sync_cluster)
    (t,) = run(run_tasks(backend, tmp_path, ComputeTask(function=fn.async_add, args=(1, 2))))
    assert t.state is TaskState.DONE and t.return_value == 3
    assert backend.state() == "STOPPED"
    with Client(sync_cluster) as c:  # the cluster is still there
        assert c.submit(fn.add, 2, 2).result(timeout=60) == 4


def test_scheduler_address_string(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    for kwargs in ({"cluster": sync_cluster.scheduler_address}, {"client": sync_cluster.scheduler_address}):
        backend = DaskExecutionBackend(**kwargs)
        (t,) = run(run_tasks(backend, tmp_path, ComputeTask(executable="/bin/echo", arguments=["addr"])))
        assert t.state is TaskState.DONE and t.stdout.strip() == "addr", (kwargs, t.exception)


def test_sync_client_is_bridged_and_left_open(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    with Client(sync_cluster) as client:
        backend = DaskExecutionBackend(client=client)
        (t,) = run(run_tasks(backend, tmp_path, ComputeTask(function=fn.add, args=(5, 6))))
        assert t.state is TaskState.DONE and t.return_value == 11, t.exception
        assert client.status == "running"
        assert client.submit(fn.add, 1, 1).result(timeout=60) == 2


def test_async_client_on_the_loop_is_used_as_is(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    async def go() -> None:
        client = await Client(sync_cluster.scheduler_address, asynchronous=True)
        try:
            backend = DaskExecutionBackend(client=client)
            await backend
            assert backend.client is client
            (t,) = await run_tasks(backend, tmp_path, ComputeTask(function=fn.add, args=(1, 1)))
            assert t.state is TaskState.DONE and t.return_value == 2
            assert client.status == "running"
            assert await client.submit(fn.add, 3, 3) == 6
        finally:
            await client.close()

    run(go())


def test_asyncflow_drives_a_backend_on_a_sync_cluster(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    from radical.asyncflow import WorkflowEngine

    async def go() -> tuple[Any, Any]:
        backend = await DaskExecutionBackend(cluster=sync_cluster)
        flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
        try:

            @flow.function_task
            async def square(x: int) -> int:
                return x * x

            @flow.executable_task
            async def shout(word: str) -> str:
                return f"/bin/echo {word}"

            a = square(7)
            b = shout("dag")
            return await a, await b
        finally:
            await flow.shutdown()

    value, out = run(go())
    assert value == 49 and out.strip() == "dag"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cluster": "tcp://127.0.0.1:1", "client": "tcp://127.0.0.1:1"}, "not both"),
        ({"resources": {"n_workers": 1}, "cluster": "tcp://127.0.0.1:1"}, "cannot be combined"),
        ({"resources": {"n_workers": 1, "no_such_option": 3}}, "no_such_option"),
        ({"cluster": object()}, "scheduler_address"),
        ({"client": 42}, "distributed.Client"),
    ],
)
def test_bad_combinations_fail_at_await(run: LoopRunner, kwargs: dict[str, Any], match: str) -> None:
    backend = DaskExecutionBackend(**kwargs)  # constructing never fails: awaiting does
    with pytest.raises(DaskConfigurationError, match=match):
        run(backend.start())
    assert backend.state() == "FAILED"


def test_unreachable_scheduler_fails_within_the_connect_timeout(run: LoopRunner) -> None:
    backend = DaskExecutionBackend(cluster="tcp://127.0.0.1:9", connect_timeout=2)
    with pytest.raises(BackendError, match=r"cannot connect to the Dask scheduler at tcp://127\.0\.0\.1:9"):
        run(backend.start(), deadline=60)


# ---------------------------------------------------------------- an owned cluster with CPU resources
class TestOwnClusterWithResources:
    """One worker with 2 threads that advertises ``CPU: 2``."""

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, run: LoopRunner) -> Iterator[DaskExecutionBackend]:
        backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 2, "resources": {"CPU": 2}})
        run(backend.start())
        yield backend
        cluster = backend.cluster
        run(backend.shutdown())
        assert cluster.status.name == "closed", "an owned LocalCluster is closed at shutdown"

    def test_capacity_from_worker_resources(self, backend: DaskExecutionBackend) -> None:
        cap = backend.capacity()
        assert cap is not None and cap.cores == 2 and cap.gpus == 0 and cap.ranks == 1

    def test_resources_map_and_impossible_ones_fail_at_once(self, run: LoopRunner, backend: DaskExecutionBackend, tmp_path: Path) -> None:
        def current_key() -> Any:
            from distributed import get_worker

            return get_worker().get_current_task()

        fits = ComputeTask(function=current_key, resources=Resources(cores_per_rank=2))
        too_many_cores = ComputeTask(function=fn.noop, resources=Resources(cores_per_rank=3))
        gpu = ComputeTask(function=fn.noop, resources=Resources(gpus_per_rank=1))
        unknown = ComputeTask(function=fn.noop, task_backend_specific_kwargs={"resources": {"FPGA": 1}})
        run(run_tasks_keep(backend, tmp_path, fits, too_many_cores, gpu, unknown))
        assert fits.state is TaskState.DONE, fits.exception
        assert fits.return_value == f"current_key-{fits.uid}", "keys are <function name>-<uid>"
        for t in (too_many_cores, gpu, unknown):
            assert t.state is TaskState.FAILED and isinstance(t.exception, ResourceError), (t.uid, t.exception)
        assert "FPGA" in str(unknown.exception)

    def test_retries_pass_through_to_dask(self, run: LoopRunner, backend: DaskExecutionBackend, tmp_path: Path) -> None:
        def flaky(marker: str) -> str:
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("first attempt fails")
            return "second attempt"

        once = ComputeTask(function=flaky, args=(str(tmp_path / "a"),))
        retried = ComputeTask(function=flaky, args=(str(tmp_path / "b"),), task_backend_specific_kwargs={"retries": 1})
        run(run_tasks_keep(backend, tmp_path, once, retried))
        assert once.state is TaskState.FAILED and "first attempt fails" in str(once.exception)
        assert "first attempt fails" in once.stderr and "Traceback" in once.stderr
        assert retried.state is TaskState.DONE and retried.return_value == "second attempt"


async def run_tasks_keep(backend: DaskExecutionBackend, work_dir: Path, *tasks: ComputeTask) -> None:
    """Run tasks on a started backend without shutting it down afterwards."""
    backend.work_dir = work_dir
    await backend.submit_tasks(list(tasks))
    await asyncio.wait_for(asyncio.gather(*(t._future for t in tasks)), DEADLINE)


# ---------------------------------------------------------------- a worker process dies
class TestWorkerLoss:
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, run: LoopRunner) -> Iterator[DaskExecutionBackend]:
        backend = DaskExecutionBackend(resources={"n_workers": 2, "threads_per_worker": 1})
        run(backend.start())
        yield backend
        run(backend.shutdown())

    def _kill_worker_of(self, run: LoopRunner, backend: DaskExecutionBackend, task: ComputeTask) -> None:
        async def go() -> None:
            await backend.submit_tasks([task])
            await wait_state(task, TaskState.RUNNING)
            assert backend.client is not None
            pids = await backend.client.run(os.getpid)
            os.kill(pids[backend._entries[task.uid].worker], signal.SIGKILL)  # the real worker process
            await asyncio.wait_for(task._future, DEADLINE)

        run(go())

    def test_lost_worker_fails_the_task(self, run: LoopRunner, backend: DaskExecutionBackend) -> None:
        t = ComputeTask(function=fn.sleep, args=(30,))
        self._kill_worker_of(run, backend, t)
        assert t.state is TaskState.FAILED
        assert isinstance(t.exception, BackendError) and "worker" in str(t.exception) and "lost" in str(t.exception)

    def test_lost_worker_is_retried_when_asked(self, run: LoopRunner, backend: DaskExecutionBackend) -> None:
        t = ComputeTask(function=fn.sleep, args=(2,), task_backend_specific_kwargs={"retries": 1})
        self._kill_worker_of(run, backend, t)
        assert t.state is TaskState.DONE and t.return_value == 2, t.exception


# ---------------------------------------------------------------- plugin
def test_plugin_discovery_does_not_import_dask() -> None:
    code = (
        "import sys\n"
        "from rhapsody.plugins import discover_backends\n"
        "rec = discover_backends()['dask']\n"
        "assert rec.distribution == 'rhapsody-dask', rec\n"
        "assert 'distributed' not in sys.modules, 'entry-point discovery imported dask.distributed'\n"
        "assert rec.engine_problem() is None\n"
        "from rhapsody.backends import DaskExecutionBackend\n"
        "from rhapsody_dask.backend import DaskExecutionBackend as D\n"
        "assert DaskExecutionBackend is D\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_task_dask_refuses_fails_alone(run: LoopRunner, tmp_path: Path) -> None:
    """An unpicklable argument and a bad ``retries`` value fail their own task only."""
    import threading

    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})
    unpicklable = ComputeTask(function=fn.echo, args=(threading.Lock(),))
    bad_retries = ComputeTask(function=fn.noop, task_backend_specific_kwargs={"retries": "x"})
    good = ComputeTask(function=fn.add, args=(1, 2))
    run(run_tasks(backend, tmp_path, unpicklable, bad_retries, good))
    for t in (unpicklable, bad_retries):
        assert t.state is TaskState.FAILED and isinstance(t.exception, BackendError), (t.uid, t.exception)
    assert "pickle" in str(unpicklable.exception) or "serialize" in str(unpicklable.exception)
    assert good.state is TaskState.DONE and good.return_value == 3


def test_running_is_reported_for_short_and_long_tasks(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    """Workers batch RUNNING announcements and drop those of tasks that end
    first: every task still passes through RUNNING, long ones while they run
    (the sync_cluster worker has two threads: both sleepers start together)."""
    backend = DaskExecutionBackend(cluster=sync_cluster)

    async def go() -> None:
        session = Session(backends=[backend], work_dir=tmp_path)
        try:
            quick = [ComputeTask(function=fn.noop) for _ in range(20)] + [ComputeTask(executable="/bin/true") for _ in range(5)]
            await session.submit_tasks(quick)
            await session.wait_tasks(quick, timeout=DEADLINE)
            for t in quick:
                assert t.state is TaskState.DONE, t.exception
                assert t.timestamps["SUBMITTED"] <= t.timestamps["RUNNING"] <= t.timestamps["DONE"]
            slow = [ComputeTask(function=fn.sleep, args=(1.5,)), ComputeTask(executable="/bin/sleep", arguments=["1.5"])]
            await session.submit_tasks(slow)
            for t in slow:
                await wait_state(t, TaskState.RUNNING)  # before the end, not synthesized with the result
            await session.wait_tasks(slow, timeout=DEADLINE)
            assert all(t.state is TaskState.DONE for t in slow), [t.exception for t in slow]
        finally:
            await session.close()

    run(go())
