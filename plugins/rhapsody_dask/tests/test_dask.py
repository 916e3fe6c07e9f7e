"""Dask-specific behaviour on real Dask clusters: every constructor mode, bad
combinations, resource mapping and pass-through, keys, lost workers, what a
local cluster listens on, plugin import."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cloudpickle
import psutil
import pytest
from distributed import Client, LocalCluster

from rhapsody import BackendError, ComputeTask, ResourceError, Resources, Session, TaskState, TaskValidationError
from rhapsody.testing import LoopRunner
from rhapsody.testing import tasks as fn
from rhapsody_dask.backend import DaskConfigurationError, DaskExecutionBackend
from rhapsody_dask.cluster import local_cluster_keywords

DEADLINE = 120.0

# the workers cannot import this test module: its functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])
LOOPBACK = ("127.0.0.1", "::1")


async def wait_state(task: ComputeTask, state: TaskState, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while task.state is not state:
        assert not task.state.is_terminal, (task.state, task.exception)
        assert time.monotonic() < deadline, f"{task.uid} never reached {state}"
        await asyncio.sleep(0.02)


async def wait_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} was not written within {timeout} s"
        await asyncio.sleep(0.02)
    return path.read_text().strip()


async def run_tasks(backend: DaskExecutionBackend, work_dir: Path, *tasks: ComputeTask) -> list[ComputeTask]:
    session = Session(backends=[backend], work_dir=work_dir)
    try:
        await session.submit_tasks(list(tasks))
        await session.wait_tasks(list(tasks), timeout=DEADLINE)
    finally:
        await session.close()
    return list(tasks)


async def run_tasks_keep(backend: DaskExecutionBackend, work_dir: Path, *tasks: ComputeTask) -> None:
    """Run tasks on a started backend without shutting it down afterwards."""
    backend.work_dir = work_dir
    await backend.submit_tasks(list(tasks))
    await asyncio.wait_for(asyncio.wait([t.future for t in tasks if t.future is not None]), DEADLINE)  # failures included


@pytest.fixture(scope="module")
def run() -> Iterator[LoopRunner]:
    runner = LoopRunner(DEADLINE)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def sync_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A plain synchronous LocalCluster, as users create them (own loop thread)."""
    scratch = str(tmp_path_factory.mktemp("dask"))
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        dashboard_address="127.0.0.1:0",
        local_directory=scratch,
        scheduler_kwargs={"local_directory": scratch},
    )
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
        assert cap is not None and cap.cores == cap.cores_per_rank == 2 and cap.gpus == 0
        assert cap.ranks == 2, "all ranks of a task run on one worker, one per core"

    def test_resources_map_and_impossible_ones_fail_at_once(self, run: LoopRunner, backend: DaskExecutionBackend, tmp_path: Path) -> None:
        def current_key() -> Any:
            from distributed import get_worker

            return get_worker().get_current_task()

        fits = ComputeTask(function=current_key, resources=Resources(cores_per_rank=2))
        named = ComputeTask(function=current_key, task_backend_specific_kwargs={"key": "my group"})
        too_many_cores = ComputeTask(function=fn.noop, resources=Resources(cores_per_rank=3))
        gpu = ComputeTask(function=fn.noop, resources=Resources(gpus_per_rank=1))
        unknown = ComputeTask(function=fn.noop, task_backend_specific_kwargs={"resources": {"FPGA": 1}})
        run(run_tasks_keep(backend, tmp_path, fits, named, too_many_cores, gpu, unknown))
        assert fits.state is TaskState.DONE, fits.exception
        assert fits.return_value.startswith("current_key-"), "keys are <function name>-<unique>"
        assert fits.uid not in fits.return_value, "a key is never derived from the task uid (uids may repeat)"
        assert named.return_value.startswith("my_group-"), named.return_value
        for t in (too_many_cores, gpu, unknown):
            assert t.state is TaskState.FAILED and isinstance(t.exception, ResourceError), (t.uid, t.exception)
        assert "FPGA" in str(unknown.exception)

    def test_retries_rerun_a_failed_function(self, run: LoopRunner, backend: DaskExecutionBackend, tmp_path: Path) -> None:
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


# ---------------------------------------------------------------- issue #11.1: a result is its own task's
def test_a_reused_uid_gets_its_own_result(run: LoopRunner, tmp_path: Path) -> None:
    """A task that reuses the uid of a finished one ends with its own value
    and output, not the earlier task's."""
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})

    def pair(word: str) -> list[ComputeTask]:
        return [
            ComputeTask(uid="reused-fn", function=fn.echo, args=(word,)),
            ComputeTask(uid="reused-exe", executable="/bin/echo", arguments=[word]),
        ]

    async def go() -> tuple[list[ComputeTask], list[ComputeTask]]:
        session = Session(backends=[backend], work_dir=tmp_path)
        try:
            first, second = pair("first"), pair("second")
            for batch in (first, second):
                await session.submit_tasks(batch)
                await session.wait_tasks(batch, timeout=DEADLINE)
            return first, second
        finally:
            await session.close()

    first, second = run(go())
    assert [t.state for t in first + second] == [TaskState.DONE] * 4, [t.exception for t in first + second]
    assert (first[0].return_value, first[1].stdout.strip()) == ("first", "first")
    assert (second[0].return_value, second[1].stdout.strip()) == ("second", "second")


def test_two_clients_of_one_scheduler_with_the_same_uid(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    """Two backends on one scheduler run tasks with colliding uids at the same time."""
    one = DaskExecutionBackend(cluster=sync_cluster, name="one")
    two = DaskExecutionBackend(cluster=sync_cluster, name="two")

    async def go() -> tuple[ComputeTask, ComputeTask]:
        a = ComputeTask(uid="collide", function=fn.async_add, args=(1, 0), kwargs={"delay": 0.5})
        b = ComputeTask(uid="collide", function=fn.async_add, args=(2, 0), kwargs={"delay": 0.5})
        await asyncio.gather(run_tasks(one, tmp_path, a), run_tasks(two, tmp_path, b))
        return a, b

    a, b = run(go())
    assert (a.state, b.state) == (TaskState.DONE, TaskState.DONE), (a.exception, b.exception)
    assert (a.return_value, b.return_value) == (1, 2)


def test_finished_tasks_leave_nothing_in_dask(run: LoopRunner, tmp_path: Path) -> None:
    """Dask keeps a key (its result, its arguments) while a client holds its
    future: after the tasks end, the scheduler and the worker hold none."""
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})

    async def held() -> tuple[int, int]:
        assert backend.client is not None
        on_scheduler = await backend.client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
        on_workers = await backend.client.run(lambda dask_worker: len(dask_worker.state.tasks))
        return on_scheduler, sum(on_workers.values())

    async def go() -> tuple[int, int]:
        session = Session(backends=[backend], work_dir=tmp_path)
        try:
            tasks = [ComputeTask(function=fn.echo, args=(bytes(10_000),)) for _ in range(150)]
            tasks += [ComputeTask(executable="/bin/echo", arguments=[str(i)]) for i in range(50)]
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks, timeout=DEADLINE)
            assert all(t.state is TaskState.DONE for t in tasks)
            deadline = time.monotonic() + 10
            while (counts := await held()) != (0, 0) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return counts
        finally:
            await session.close()

    assert run(go()) == (0, 0), "keys of finished tasks are still held in the scheduler / worker"


# ---------------------------------------------------------------- issue #11.6: a worker process dies
def pid_then_sleep(pidfile: str, seconds: float) -> float:
    """Write this worker's pid and address, then sleep (a task that occupies a worker)."""
    from distributed import get_worker

    tmp = pidfile + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{os.getpid()} {get_worker().address}\n")
    os.replace(tmp, pidfile)
    time.sleep(seconds)
    return seconds


class TestWorkerLoss:
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, run: LoopRunner) -> Iterator[DaskExecutionBackend]:
        backend = DaskExecutionBackend(resources={"n_workers": 2, "threads_per_worker": 1})
        run(backend.start())
        yield backend
        run(backend.shutdown())

    def test_only_the_task_running_on_a_lost_worker_fails(self, run: LoopRunner, backend: DaskExecutionBackend, tmp_path: Path) -> None:
        doomed = ComputeTask(function=pid_then_sleep, args=(str(tmp_path / "doomed"), 60))
        other = ComputeTask(function=pid_then_sleep, args=(str(tmp_path / "other"), 3))
        queued = [ComputeTask(function=fn.sleep, args=(0.2,)) for _ in range(6)]

        async def go() -> str:
            await backend.submit_tasks([doomed, other])
            pid, address = (await wait_file(tmp_path / "doomed")).split()
            await wait_file(tmp_path / "other")
            await backend.submit_tasks(queued)
            await asyncio.sleep(0.5)  # the scheduler places some of them on the doomed worker
            os.kill(int(pid), signal.SIGKILL)
            await asyncio.wait_for(asyncio.wait([t.future for t in [doomed, other, *queued] if t.future]), DEADLINE)
            return address

        address = run(go())
        assert doomed.state is TaskState.FAILED and isinstance(doomed.exception, BackendError)
        assert "lost" in str(doomed.exception) and address in str(doomed.exception), doomed.exception
        assert other.state is TaskState.DONE, other.exception
        assert [t.state for t in queued] == [TaskState.DONE] * 6, [str(t.exception) for t in queued if t.exception]

    def test_lost_worker_is_retried_when_asked(self, run: LoopRunner, backend: DaskExecutionBackend, tmp_path: Path) -> None:
        pidfile = tmp_path / "pid"
        t = ComputeTask(function=pid_then_sleep, args=(str(pidfile), 3), task_backend_specific_kwargs={"retries": 1})

        async def go() -> None:
            await backend.submit_tasks([t])
            pid = int((await wait_file(pidfile)).split()[0])
            pidfile.unlink()
            os.kill(pid, signal.SIGKILL)
            assert t.future is not None
            await asyncio.wait_for(t.future, DEADLINE)

        run(go())
        assert t.state is TaskState.DONE and t.return_value == 3, t.exception
        assert pidfile.exists(), "it ran a second time"


# ---------------------------------------------------------------- issue #11.11: loopback only
def test_own_local_cluster_listens_on_loopback_only(run: LoopRunner) -> None:
    """Scheduler, nannies, workers and dashboard of the cluster the backend
    starts accept connections from this machine only; its scratch space goes
    with it."""
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})
    scratch: list[str] = []

    async def go() -> list[tuple[str, int]]:
        await backend
        try:
            assert backend.client is not None
            cluster = backend.cluster
            scratch.append(cluster.scheduler.local_directory)
            ours = {urlparse(cluster.scheduler_address).port, cluster.scheduler_info["services"]["dashboard"]}
            ours |= {urlparse(nanny.address).port for nanny in cluster.workers.values()}
            workers = set((await backend.client.run(os.getpid)).values())
            seen = []
            for pid in {os.getpid(), *workers}:
                proc = psutil.Process(pid)
                for c in getattr(proc, "net_connections", proc.connections)(kind="inet"):  # renamed in psutil 6
                    if c.status == psutil.CONN_LISTEN and (pid in workers or c.laddr.port in ours):
                        seen.append((c.laddr.ip, c.laddr.port))
            listening = {port for _, port in seen}
            assert ours <= listening, (ours, seen)
            return seen
        finally:
            await backend.shutdown()

    seen = run(go())
    assert [s for s in seen if s[0] not in LOOPBACK] == [], f"listening beyond loopback: {seen}"
    assert scratch and not os.path.exists(scratch[0]), "the owned cluster's scratch directory was left behind"


def test_the_user_can_choose_where_a_local_cluster_listens() -> None:
    assert local_cluster_keywords({})["host"] == "127.0.0.1"
    assert local_cluster_keywords({})["dashboard_address"] == "127.0.0.1:0"
    wide = local_cluster_keywords({"host": "tcp://0.0.0.0"})
    assert (wide["host"], wide["dashboard_address"]) == ("tcp://0.0.0.0", "0.0.0.0:0")
    assert local_cluster_keywords({"dashboard_address": ":8787"})["dashboard_address"] == ":8787"


# ---------------------------------------------------------------- issue #11.12, #11.4: messages, leftovers
def test_errors_name_what_is_wrong(run: LoopRunner, tmp_path: Path) -> None:
    """A bad cwd names the directory (exit 126); an argument that cannot be
    pickled names the task and the argument, and fails only its task."""
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})
    bad_cwd = ComputeTask(executable="/bin/echo", arguments=["x"], task_backend_specific_kwargs={"cwd": str(tmp_path / "gone")})
    unpicklable = ComputeTask(function=fn.echo, args=(threading.Lock(),))
    unpicklable_kw = ComputeTask(function=fn.add, args=(1,), kwargs={"b": threading.Lock()})
    bad_retries = ComputeTask(function=fn.noop, task_backend_specific_kwargs={"retries": "x"})
    good = ComputeTask(function=fn.add, args=(1, 2))
    run(run_tasks(backend, tmp_path, bad_cwd, unpicklable, unpicklable_kw, bad_retries, good))
    assert bad_cwd.state is TaskState.FAILED and bad_cwd.exit_code == 126
    assert "working directory" in str(bad_cwd.exception) and str(tmp_path / "gone") in str(bad_cwd.exception)
    for t, where in ((unpicklable, "args[0]"), (unpicklable_kw, "kwargs['b']")):
        assert t.state is TaskState.FAILED, t.state
        assert t.uid in str(t.exception) and where in str(t.exception) and "lock" in str(t.exception), t.exception
    assert bad_retries.state is TaskState.FAILED and isinstance(bad_retries.exception, TaskValidationError)
    assert good.state is TaskState.DONE and good.return_value == 3


def test_background_child_ends_with_its_program_and_output_is_kept(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    backend = DaskExecutionBackend(cluster=sync_cluster)
    pidfiles = [tmp_path / "child", tmp_path / "child2"]
    lines = [f"sleep 300 & echo $! > {pidfile}; echo started" for pidfile in pidfiles]
    plain = ComputeTask(executable="/bin/sh", arguments=["-c", lines[0]])
    captured = ComputeTask(executable="/bin/sh", arguments=["-c", lines[1]], capture_stdio=True)
    t0 = time.monotonic()
    run(run_tasks(backend, tmp_path, plain, captured))
    assert time.monotonic() - t0 < 60
    assert plain.state is TaskState.DONE and plain.stdout.strip() == "started", (plain.state, plain.exception)
    assert captured.state is TaskState.DONE and Path(captured.stdout).read_text().strip() == "started"
    for path in pidfiles:
        child = int(path.read_text())
        deadline = time.monotonic() + 15
        while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"the leftover child {child} still runs"
            time.sleep(0.05)


# ---------------------------------------------------------------- RUNNING, plugin
def test_running_is_reported_for_short_and_long_tasks(run: LoopRunner, sync_cluster: LocalCluster, tmp_path: Path) -> None:
    """Workers batch RUNNING announcements and drop those of tasks that end
    first: every task still passes through RUNNING, long ones while they run
    (the sync_cluster worker has two threads: both sleepers start together),
    and says which worker ran it (``task.worker``: the cluster's one worker)."""
    backend = DaskExecutionBackend(cluster=sync_cluster)
    (worker,) = sync_cluster.scheduler_info["workers"]

    async def go() -> None:
        session = Session(backends=[backend], work_dir=tmp_path)
        try:
            quick = [ComputeTask(function=fn.noop) for _ in range(20)] + [ComputeTask(executable="/bin/true") for _ in range(5)]
            await session.submit_tasks(quick)
            await session.wait_tasks(quick, timeout=DEADLINE)
            for t in quick:
                assert t.state is TaskState.DONE, t.exception
                assert t.timestamps["SUBMITTED"] <= t.timestamps["RUNNING"] <= t.timestamps["DONE"]
                assert t.worker == worker, (t.uid, t.worker)
            slow = [ComputeTask(function=fn.sleep, args=(1.5,)), ComputeTask(executable="/bin/sleep", arguments=["1.5"])]
            await session.submit_tasks(slow)
            for t in slow:
                await wait_state(t, TaskState.RUNNING)  # before the end, not synthesized with the result
                assert t.worker == worker, (t.uid, t.worker)
            await session.wait_tasks(slow, timeout=DEADLINE)
            assert all(t.state is TaskState.DONE for t in slow), [t.exception for t in slow]
        finally:
            await session.close()

    run(go())


def test_plugin_discovery_does_not_import_dask() -> None:
    code = (
        "import sys\n"
        "from rhapsody.registry import discover_backends\n"
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
