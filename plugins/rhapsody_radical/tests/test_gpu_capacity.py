"""GPUs in the RADICAL-Pilot backend's pilot description and capacity().

A local pilot gets this machine's GPUs (`gpu_count`) as it gets its cores; a
remote resource without ``gpus`` is unknown (None), never 0. This box has no
GPU: its GPUs come from ``CUDA_VISIBLE_DEVICES`` here, and no pilot is started
with GPUs (RP would have to find them on a real GPU node; not exercised here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rhapsody.engine.host import GPU_VISIBILITY_VARIABLES
from rhapsody_radical.backend import RadicalExecutionBackend


@pytest.fixture
def visible(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in GPU_VISIBILITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # no RP config of the user's: the backend's own private config declares the GPUs
    monkeypatch.delenv("RADICAL_CONFIG_USER_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


def test_users_own_rp_config_decides_the_local_gpus(visible: pytest.MonkeyPatch, tmp_path: Path) -> None:
    visible.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    visible.setenv("RADICAL_CONFIG_USER_DIR", str(tmp_path / "mine"))
    backend = RadicalExecutionBackend({"cores": 2})
    assert "gpus" not in backend.pilot_description
    cap = backend.capacity()
    assert cap is not None and cap.gpus is None


def test_local_pilot_gets_the_visible_gpus(visible: pytest.MonkeyPatch) -> None:
    visible.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    backend = RadicalExecutionBackend({"cores": 2})
    assert backend.pilot_description["gpus"] == 2
    cap = backend.capacity()
    assert cap is not None and cap.gpus == 2


def test_local_pilot_without_gpus(visible: pytest.MonkeyPatch) -> None:
    visible.setenv("CUDA_VISIBLE_DEVICES", "")
    backend = RadicalExecutionBackend({"cores": 2})
    assert "gpus" not in backend.pilot_description
    cap = backend.capacity()
    assert cap is not None and cap.gpus == 0


def test_asked_gpus_win(visible: pytest.MonkeyPatch) -> None:
    visible.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    cap = RadicalExecutionBackend({"cores": 2, "gpus": 1}).capacity()
    assert cap is not None and cap.gpus == 1


def test_remote_resource_without_gpus_is_unknown_not_zero(visible: pytest.MonkeyPatch) -> None:
    visible.setenv("CUDA_VISIBLE_DEVICES", "")  # this machine's GPUs say nothing about the remote one
    cap = RadicalExecutionBackend({"resource": "ornl.frontier", "cores": 56}).capacity()
    assert cap is not None and cap.gpus is None
    cap = RadicalExecutionBackend({"resource": "ornl.frontier", "cores": 56, "gpus": 8}).capacity()
    assert cap is not None and cap.gpus == 8
