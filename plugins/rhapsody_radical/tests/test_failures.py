"""Pilots that fail for real, and what is left afterwards.

Each test starts its own pilot (10-20 s each; the runtime test waits for a
1-minute pilot to run out)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from procs import assert_nothing_left, group_members, pilot_agent

from rhapsody import BackendError, ComputeTask, Session, TaskState
from rhapsody.engine.host import core_count
from rhapsody.testing import tasks as fn
from rhapsody.testing.conformance import LoopRunner, wait_for_state
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.environment import CONFIG_ENV


@pytest.fixture
def run():
    runner = LoopRunner(deadline=400.0)
    yield runner
    runner.close()


def _start_fails(run: LoopRunner, backend: RadicalExecutionBackend) -> BackendError:
    with pytest.raises(BackendError) as info:
        run(backend.start())
    assert backend.state() == "FAILED"
    return info.value


def test_seed_snippet_on_a_small_machine_fails_with_the_agents_text(
    run: LoopRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented snippet asks for 128 cores; with real cores in the
    private config the agent refuses, and that refusal is what `await` raises."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    baseline = group_members()
    backend = RadicalExecutionBackend(resources={"resource": "local.localhost", "runtime": 30, "cores": 128})
    backend.work_dir = tmp_path
    error = _start_fails(run, backend)
    assert f"insufficient cores found ({core_count()} < 128)" in str(error)
    assert "pilot.0000" in str(error) and "agent_0.err" in str(error)
    assert CONFIG_ENV not in os.environ, "the private config dir must not outlive the backend"
    assert backend.rp_session is not None and str(tmp_path) in backend.rp_session.path
    assert_nothing_left(baseline, backend.rp_session.uid)


def test_a_users_own_rp_config_is_used_not_replaced(run: LoopRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_dir = tmp_path / "user-rp"
    cfg = user_dir / ".radical" / "pilot" / "configs" / "resource_local.json"
    cfg.parent.mkdir(parents=True)
    text = json.dumps({"localhost": {"cores_per_node": 1, "gpus_per_node": 0, "fake_resources": False}})
    cfg.write_text(text)
    monkeypatch.setenv(CONFIG_ENV, str(user_dir))
    baseline = group_members()
    backend = RadicalExecutionBackend(resources={"runtime": 5, "cores": 2})
    backend.work_dir = tmp_path / "work"
    error = _start_fails(run, backend)
    # the user's config says 1 real core per node, so the agent refuses a
    # 2-core pilot: their file was read, and ours was never written
    assert "incorrectly defined 1 cores per node" in str(error), str(error)
    assert cfg.read_text() == text
    assert os.environ[CONFIG_ENV] == str(user_dir)
    assert not (tmp_path / "work" / "radical.radical_pilot" / "config").exists()
    assert_nothing_left(baseline, backend.rp_session.uid)


def test_exit_on_error_true_is_refused() -> None:
    with pytest.raises(ValueError, match="SIGTERM"):
        RadicalExecutionBackend(resources={"exit_on_error": True})


def test_runtime_exhausted_fails_running_and_later_tasks_with_backend_error(run: LoopRunner, tmp_path: Path) -> None:
    baseline = group_members()
    backend = RadicalExecutionBackend(resources={"runtime": 1, "cores": 1})
    long = ComputeTask(executable="/bin/sleep", arguments=["600"])

    async def go() -> None:
        async with Session([backend], work_dir=tmp_path) as session:
            await session.submit_tasks([long])
            await wait_for_state(long, TaskState.RUNNING, timeout=120)
            await session.wait_tasks([long], timeout=240)
            assert long.state is TaskState.FAILED
            assert isinstance(long.exception, BackendError), repr(long.exception)
            assert "pilot.0000" in str(long.exception)
            late = ComputeTask(function=fn.noop)
            await session.submit_tasks([late])
            await session.wait_tasks([late], timeout=60)
            assert late.state is TaskState.FAILED and late.exception is long.exception

    run(go())
    assert_nothing_left(baseline, backend.rp_session.uid)


def test_agent_crash_fails_running_and_later_tasks_with_backend_error(run: LoopRunner, tmp_path: Path) -> None:
    """SIGKILL the pilot's agent_0 while a task runs. RP's bootstrap shell
    notices within seconds and the pilot goes FAILED: the running task and a
    later one end FAILED with a BackendError saying the agent died, this
    process gets no SIGTERM, and shutdown sweeps the orphaned task."""
    baseline = group_members()
    terms: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))
    backend = RadicalExecutionBackend(resources={"runtime": 5, "cores": 1})
    long = ComputeTask(executable="/bin/sleep", arguments=["600"])
    late = ComputeTask(executable="/bin/echo", arguments=["never"])

    async def go() -> None:
        async with Session([backend], work_dir=tmp_path) as session:
            await session.submit_tasks([long])
            await wait_for_state(long, TaskState.RUNNING, timeout=120)
            agent = pilot_agent(backend.rp_session.uid)
            agent.kill()
            await session.wait_tasks([long], timeout=180)
            assert long.state is TaskState.FAILED
            assert isinstance(long.exception, BackendError), repr(long.exception)
            message = str(long.exception)
            assert f"agent process {agent.pid} died" in message, message
            assert "killed by SIGKILL" in message and "pilot.0000" in message, message
            await session.submit_tasks([late])
            await session.wait_tasks([late], timeout=60)
            assert late.state is TaskState.FAILED and late.exception is long.exception

    try:
        run(go())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert terms == [], "the pilot's death must not SIGTERM the user's process"
    assert backend.state() == "STOPPED"
    assert_nothing_left(baseline, backend.rp_session.uid)


def test_shutdown_with_raptor_busy_on_two_cores_leaves_nothing(run: LoopRunner, tmp_path: Path) -> None:
    """On a 2-core pilot raptor (master + worker) holds both cores once the
    first function arrives: an executable then waits. Shutdown must cancel
    both, stop raptor and leave no process (RP alone leaves the worker)."""
    baseline = group_members()
    backend = RadicalExecutionBackend(resources={"runtime": 10, "cores": 2})
    busy = ComputeTask(function=fn.sleep, args=(300,))
    waiting = ComputeTask(executable="/bin/echo", arguments=["never"])

    async def go() -> None:
        session = Session([backend], work_dir=tmp_path)
        (done,) = await session.submit_tasks([ComputeTask(function=fn.add, args=(1, 2))])
        assert (await done).return_value == 3
        await session.submit_tasks([busy, waiting])
        await wait_for_state(busy, TaskState.RUNNING, timeout=60)
        await asyncio.sleep(3)
        assert waiting.state is TaskState.SUBMITTED
        await session.close()
        assert busy.state is TaskState.CANCELED and waiting.state is TaskState.CANCELED

    run(go())
    assert backend.state() == "STOPPED"
    assert_nothing_left(baseline, backend.rp_session.uid)
