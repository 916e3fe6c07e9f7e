"""`rhapsody.engine.host.gpu_count`: GPUs known (an int, 0 = none) or unknown
(None), never a claimed 0 on a GPU node; and what the default backend reports.

This box has no GPU. What runs here for real: the visibility variables
(``CUDA_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES``)
and the "no GPU driver at all" answer. The NVML path cannot be exercised
with a real GPU here: a stand-in ``nvidia-smi`` on ``PATH`` plays a GPU node
(two GPUs) and a node whose driver does not answer; ``/proc/driver/nvidia``,
``/dev/nvidiaN`` and AMD's ``/sys/class/kfd`` are read only on real hardware
(the last test checks them when the machine running it has a driver).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from rhapsody.engine import gpu_count
from rhapsody.engine.host import GPU_VISIBILITY_VARIABLES
from rhapsody.resources import Resources
from rhapsody.session import Session
from rhapsody.task import ComputeTask
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


def _has_gpu_driver() -> bool:
    return bool(
        shutil.which("nvidia-smi")
        or Path("/proc/driver/nvidia/gpus").exists()
        or list(Path("/dev").glob("nvidia[0-9]*"))
        or Path("/sys/class/kfd").exists()
    )


@pytest.fixture
def no_visibility(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in GPU_VISIBILITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 1), ("0,1", 2), ("2, 3 ,5", 3), ("GPU-8f3c1e2a,GPU-1b2c3d4e", 2), ("", 0), ("-1", 0), ("NoDevFiles", 0)],
)
@pytest.mark.parametrize("variable", GPU_VISIBILITY_VARIABLES)
def test_visibility_variable_is_the_count(no_visibility: pytest.MonkeyPatch, variable: str, value: str, expected: int) -> None:
    no_visibility.setenv(variable, value)
    assert gpu_count() == expected


def test_cuda_variable_wins_over_rocm(no_visibility: pytest.MonkeyPatch) -> None:
    no_visibility.setenv("ROCR_VISIBLE_DEVICES", "0,1,2")
    no_visibility.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu_count() == 1


def _fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A stand-in for NVIDIA's tool: this box has no GPU to ask (see module doc)."""
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n" + body + "\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}")


def test_nvidia_smi_listing_counts_gpus(no_visibility: pytest.MonkeyPatch, tmp_path: Path) -> None:
    listing = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb)"
    _fake_nvidia_smi(tmp_path, no_visibility, f"printf '%s\\n' '{listing.splitlines()[0]}' '{listing.splitlines()[1]}'")
    assert gpu_count() == 2


def test_a_driver_that_does_not_answer_is_unknown_not_zero(no_visibility: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_nvidia_smi(
        tmp_path, no_visibility, "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2; exit 9"
    )
    if Path("/proc/driver/nvidia/gpus").exists() or list(Path("/dev").glob("nvidia[0-9]*")):
        assert gpu_count() not in (None, 0)  # a real driver here answers through its other sources
    else:
        assert gpu_count() is None


def test_this_machine_without_variables(no_visibility: pytest.MonkeyPatch) -> None:
    count = gpu_count()
    if _has_gpu_driver():
        assert count is None or count > 0, "a machine with a GPU driver must never report 0 GPUs"
    else:
        assert count == 0, "no GPU driver on this machine: known to have no GPU"


def test_default_backend_reports_visible_gpus(no_visibility: pytest.MonkeyPatch) -> None:
    no_visibility.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    capacity = ConcurrentExecutionBackend(cores=2).capacity()
    assert capacity is not None and capacity.gpus == 2 and capacity.gpus_per_rank == 2
    no_visibility.setenv("CUDA_VISIBLE_DEVICES", "")
    capacity = ConcurrentExecutionBackend(cores=2).capacity()
    assert capacity is not None and capacity.gpus == 0


def test_gpu_task_is_admitted_where_gpus_are_visible(no_visibility: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_visibility.setenv("CUDA_VISIBLE_DEVICES", "0")

    async def go() -> tuple[str, str]:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as session:
            fits = ComputeTask(executable="/bin/true", resources=Resources(gpus_per_rank=1))
            too_many = ComputeTask(executable="/bin/true", resources=Resources(gpus_per_rank=2))
            await session.submit_tasks([fits, too_many])
            await session.wait_tasks([fits, too_many], timeout=120)
            return str(fits.state), str(too_many.state)

    assert asyncio.run(go()) == ("DONE", "FAILED")
