"""A task that cannot run fails alone and says why, without leaking the
environment (issue #11, items 5, 9 and 10)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rhapsody import ComputeTask, ResourceError, Resources, Session, TaskExecutionError, TaskState
from rhapsody.engine import core_count
from rhapsody.testing import LoopRunner
from rhapsody.testing import tasks as fn
from rhapsody_dragon import DragonExecutionBackendV1, DragonExecutionBackendV2
from rhapsody_dragon.runtime import MESSAGE_LIMIT, scrub

if TYPE_CHECKING:
    from rhapsody import Backend

SECRET = "rhapsody-test-secret-7f3a9c1e5b"


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every line RHAPSODY logs (DEBUG and up) while the test runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("rhapsody")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def _run(backend: Backend, tmp_path: Path, *tasks: ComputeTask) -> None:
    run = LoopRunner(240)

    async def go() -> None:
        async with Session([backend], work_dir=tmp_path) as session:
            await session.submit_tasks(list(tasks))
            await session.wait_tasks(list(tasks), timeout=120)

    try:
        run(go())
    finally:
        run.close()


def test_v2_unpicklable_argument_fails_only_its_task(tmp_path: Path) -> None:
    """Was: one ``threading.Lock()`` argument failed every task of the submit call."""
    good, bad, good2 = (
        ComputeTask(function=fn.add, args=(1, 2)),
        ComputeTask(function=fn.echo, args=(threading.Lock(),)),
        ComputeTask(function=fn.add, args=(3, 4)),
    )
    _run(DragonExecutionBackendV2(name="v2-pickle", num_workers=1), tmp_path, good, bad, good2)
    assert (good.state, good.return_value, good2.state, good2.return_value) == (TaskState.DONE, 3, TaskState.DONE, 7)
    assert bad.state is TaskState.FAILED
    message = str(bad.exception)
    assert bad.uid in message and "args[0]" in message and "lock" in message, message


def test_v1_capacity_is_the_node_per_rank(tmp_path: Path) -> None:
    """Was: ``Resources(cores_per_rank=64)`` ran, and ended DONE, on a 2-core node."""
    backend = DragonExecutionBackendV1(name="v1-capacity", num_workers=1)
    capacity = backend.capacity()
    assert capacity is not None and capacity.cores_per_rank == core_count()
    too_big = ComputeTask(executable="/bin/true", resources=Resources(cores_per_rank=64 * core_count()))
    fits = ComputeTask(executable="/bin/true", resources=Resources(cores_per_rank=core_count()))
    _run(backend, tmp_path, too_big, fits)
    assert too_big.state is TaskState.FAILED and isinstance(too_big.exception, ResourceError), too_big.exception
    assert fits.state is TaskState.DONE, fits.exception


def test_v1_task_that_cannot_start_carries_no_environment(tmp_path: Path, log_lines: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a bad ``cwd`` failed with a ~6 KB message quoting every environment
    variable (tokens too), logged verbatim."""
    monkeypatch.setenv("RHAPSODY_TEST_PROCESS_TOKEN", SECRET + "-process")
    missing = tmp_path / "no-such-dir"
    t = ComputeTask(executable="/bin/true", task_backend_specific_kwargs={"cwd": str(missing), "env": {"RHAPSODY_TEST_TOKEN": SECRET}})
    _run(DragonExecutionBackendV1(name="v1-bad-cwd", num_workers=1), tmp_path, t)
    assert t.state is TaskState.FAILED and isinstance(t.exception, TaskExecutionError)
    assert t.exit_code == 126 and "no-such-dir" in str(t.exception), t.exception
    assert len(str(t.exception)) < 1000
    for text in [str(t.exception), t.stderr or "", *log_lines]:
        assert SECRET not in text, text[:500]


def test_dragon_error_text_loses_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dragon's own launch errors quote the whole launch request, environment
    included. Past the launch preflight no such error can be caused for real
    here (as root every existing directory can be entered), so this feeds
    `scrub` text of that shape, as it came from Dragon 0.15."""
    monkeypatch.setenv("RHAPSODY_TEST_PROCESS_TOKEN", SECRET)
    text = (
        "ProcessError: process create failed: LSProcessCreate(exe='/bin/true', args=[], "
        f"env={{'RHAPSODY_TEST_PROCESS_TOKEN': '{SECRET}', 'RHAPSODY_TEST_TOKEN': '{SECRET}-task'}}, ...) "
        "encountered [Errno 2] No such file or directory: '/gone'\n" + "Traceback ...\n" * 500
    )
    out = scrub(text, {"RHAPSODY_TEST_TOKEN": SECRET + "-task"})
    assert SECRET not in out
    assert "RHAPSODY_TEST_TOKEN" in out and "LSProcessCreate" in out, "only the values go"
    assert len(out) <= MESSAGE_LIMIT + 4
