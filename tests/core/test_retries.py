"""Retries in core, on the real concurrent backend (thread pool): which
failures are retried, the backoff, every attempt visible, one settlement."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from toys import Recorder, run

from rhapsody import ComputeTask, Session, TaskState, TaskTimeoutError, TaskValidationError
from rhapsody.errors import TaskCanceledError
from rhapsody.retry import RetryPolicy
from rhapsody.testing import tasks as fn
from rhapsody_concurrent.backend import ConcurrentExecutionBackend

FAST = RetryPolicy(backoff=0.01, max_backoff=0.05)


def _session(tmp_path: Path, **kwargs: object) -> Session:
    return Session(backends=[ConcurrentExecutionBackend(cores=4)], work_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_opted_in_exception_is_retried_until_it_succeeds(tmp_path: Path, recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    t = ComputeTask(function=fn.fail_then_succeed, args=(str(tmp_path), 2), retries=3, retry_on=(fn.Transient,))
    settled: list[object] = []

    async def go() -> None:
        async with _session(tmp_path, retries=FAST) as s:
            (future,) = await s.submit_tasks([t])
            future.add_done_callback(settled.append)
            assert await t is t

    with caplog.at_level(logging.INFO):
        run(go())
    assert t.state is TaskState.DONE and t.return_value == 3
    assert t.attempt == 3
    assert [type(e) for e in t.attempt_errors] == [fn.Transient, fn.Transient]
    assert "call 1 fails" in str(t.attempt_errors[0]) and "call 2 fails" in str(t.attempt_errors[1])
    assert len(settled) == 1, "the future settles once"
    states = recorder.states_of(t.uid)
    assert states == ["SUBMITTED", "RUNNING", "SUBMITTED", "RUNNING", "SUBMITTED", "RUNNING", "DONE"], states
    retries = [r for r in caplog.records if "task.retry" in r.getMessage()]
    assert len(retries) == 2 and "attempt=2" in retries[0].getMessage() and "Transient" in retries[0].getMessage()


def test_a_retried_task_names_no_worker_until_its_next_attempt_runs(tmp_path: Path) -> None:
    t = ComputeTask(function=fn.fail_then_succeed, args=(str(tmp_path), 1), retries=2, retry_on=(fn.Transient,))
    seen: list[tuple[str, str | None]] = []

    async def go() -> None:
        backend = await ConcurrentExecutionBackend(cores=2)
        backend.add_state_observer(lambda _b, task, _old, new: seen.append((new.value, task.worker)))
        async with Session(backends=[backend], work_dir=tmp_path, retries=FAST) as s:
            await s.submit_tasks([t])
            await s.wait_tasks([t])

    run(go())
    assert [state for state, _ in seen] == ["SUBMITTED", "RUNNING", "SUBMITTED", "RUNNING", "DONE"]
    assert [worker is None for _, worker in seen] == [True, False, True, False, False], seen


def test_task_own_exception_is_not_retried_by_default(tmp_path: Path) -> None:
    t = ComputeTask(function=fn.fail_then_succeed, args=(str(tmp_path), 1), retries=3)

    async def go() -> None:
        async with _session(tmp_path, retries=FAST) as s:
            await s.submit_tasks([t])
            await s.wait_tasks([t])

    run(go())
    assert t.state is TaskState.FAILED and isinstance(t.exception, fn.Transient)
    assert t.attempt == 1 and t.attempt_errors == []
    assert (tmp_path / "calls").read_text().split() == ["x"]


def test_last_attempt_decides_and_awaiting_raises_it(tmp_path: Path) -> None:
    t = ComputeTask(function=fn.fail_then_succeed, args=(str(tmp_path), 5), retries=2, retry_on=fn.Transient)

    async def go() -> None:
        async with _session(tmp_path, retries=FAST) as s:
            (future,) = await s.submit_tasks([t])
            with pytest.raises(fn.Transient, match="call 3 fails"):
                await future

    run(go())
    assert t.state is TaskState.FAILED and t.attempt == 3
    assert [str(e) for e in t.attempt_errors] == ["call 1 fails on purpose", "call 2 fails on purpose"]


def test_session_default_applies_and_a_task_can_opt_out(tmp_path: Path) -> None:
    a, b = (tmp_path / "a", tmp_path / "b")
    a.mkdir(), b.mkdir()
    policy = RetryPolicy(retries=2, backoff=0.01, retry_on=(fn.Transient,))
    inherits = ComputeTask(function=fn.fail_then_succeed, args=(str(a), 1))
    opts_out = ComputeTask(function=fn.fail_then_succeed, args=(str(b), 1), retries=0)

    async def go() -> None:
        async with _session(tmp_path, retries=policy) as s:
            await s.submit_tasks([inherits, opts_out])
            await s.wait_tasks([inherits, opts_out])

    run(go())
    assert inherits.state is TaskState.DONE and inherits.attempt == 2
    assert opts_out.state is TaskState.FAILED and opts_out.attempt == 1


def test_timeout_is_retried_when_asked(tmp_path: Path) -> None:
    t = ComputeTask(function=fn.sleep, args=(3.0,), timeout=0.3, retries=1, retry_on=(TaskTimeoutError,))

    async def go() -> None:
        async with _session(tmp_path, retries=FAST) as s:
            await s.submit_tasks([t])
            await s.wait_tasks([t])

    run(go())
    assert t.state is TaskState.FAILED and isinstance(t.exception, TaskTimeoutError)
    assert t.attempt == 2 and [type(e) for e in t.attempt_errors] == [TaskTimeoutError]


def test_cancel_during_backoff_ends_it_canceled(tmp_path: Path) -> None:
    slow = RetryPolicy(retries=3, backoff=60.0, max_backoff=60.0, retry_on=(fn.Transient,))
    t = ComputeTask(function=fn.fail_then_succeed, args=(str(tmp_path), 1))

    async def go() -> None:
        async with _session(tmp_path, retries=slow) as s:
            await s.submit_tasks([t])
            while not t.attempt_errors:
                await asyncio.sleep(0.01)
            assert t.state is TaskState.SUBMITTED and t.attempt == 2
            assert await s.cancel_tasks([t]) == [True]
            with pytest.raises(TaskCanceledError):
                await t

    run(go())
    assert t.state is TaskState.CANCELED
    assert (tmp_path / "calls").read_text().split() == ["x"], "the canceled retry must not run"


def test_bad_retry_settings_are_refused() -> None:
    with pytest.raises(TaskValidationError, match="retries"):
        ComputeTask(function=fn.noop, retries=-1)
    with pytest.raises(TaskValidationError, match="retry_on"):
        ComputeTask(function=fn.noop, retry_on=("ValueError",))
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backoff"):
        Session(backends=[ConcurrentExecutionBackend()], retries=RetryPolicy(backoff=-1))


def test_backoff_grows_and_is_capped_with_jitter() -> None:
    policy = RetryPolicy(backoff=1.0, max_backoff=5.0)
    for retry, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)):
        delays = [policy.delay(retry) for _ in range(50)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays), (retry, min(delays), max(delays))
        assert len(set(delays)) > 1, "jitter: delays differ"
