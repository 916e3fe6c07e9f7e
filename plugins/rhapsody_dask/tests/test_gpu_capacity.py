"""GPUs in the Dask backend's capacity(), on real LocalClusters.

A worker that declares a ``GPU`` resource is taken at its word (Dask enforces
it). One that declares none reports its host's GPUs (`gpu_count`, run on the
worker). This box has no GPU: the workers' GPUs come from
``CUDA_VISIBLE_DEVICES``, which the worker processes inherit, as a batch
system's allocation would give it to them; reading a real driver on a GPU
node is not exercised here (see tests/core/test_host_gpus.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rhapsody import ComputeTask, Resources, Session, TaskState
from rhapsody.engine.host import GPU_VISIBILITY_VARIABLES
from rhapsody.testing import LoopRunner
from rhapsody.testing import tasks as fn
from rhapsody_dask.backend import DaskExecutionBackend

DEADLINE = 180.0


@pytest.fixture(scope="module")
def run() -> Iterator[LoopRunner]:
    runner = LoopRunner(DEADLINE)
    yield runner
    runner.close()


@pytest.fixture
def visible(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in GPU_VISIBILITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def _capacity_and_gpu_task(backend: DaskExecutionBackend, work_dir: Path, gpus: int) -> tuple[object, TaskState]:
    async with Session(backends=[backend], work_dir=work_dir) as session:
        await backend
        cap = backend.capacity()
        task = ComputeTask(function=fn.getenv, args=("CUDA_VISIBLE_DEVICES",), resources=Resources(gpus_per_rank=gpus))
        await session.submit_tasks([task])
        await session.wait_tasks([task], timeout=DEADLINE)
        return cap, task.state


def test_workers_report_their_hosts_gpus(run: LoopRunner, visible: pytest.MonkeyPatch, tmp_path: Path) -> None:
    visible.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # inherited by the worker processes
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})
    cap, state = run(_capacity_and_gpu_task(backend, tmp_path, 2))
    assert cap is not None and cap.gpus == 2 and cap.gpus_per_rank == 2, cap  # type: ignore[attr-defined]
    assert state is TaskState.DONE


def test_declared_gpu_resource_wins(run: LoopRunner, visible: pytest.MonkeyPatch, tmp_path: Path) -> None:
    visible.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1, "resources": {"GPU": 1}})
    cap, state = run(_capacity_and_gpu_task(backend, tmp_path, 2))
    assert cap is not None and cap.gpus == 1, cap  # type: ignore[attr-defined]
    assert state is TaskState.FAILED, "two GPUs asked of workers that declare one"


def test_no_gpus_where_none_are_visible(run: LoopRunner, visible: pytest.MonkeyPatch, tmp_path: Path) -> None:
    visible.setenv("CUDA_VISIBLE_DEVICES", "")
    backend = DaskExecutionBackend(resources={"n_workers": 1, "threads_per_worker": 1})
    cap, state = run(_capacity_and_gpu_task(backend, tmp_path, 1))
    assert cap is not None and cap.gpus == 0, cap  # type: ignore[attr-defined]
    assert state is TaskState.FAILED
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
