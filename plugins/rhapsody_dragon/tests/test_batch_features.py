"""Dragon V3 (Batch) as rhapsody-py 0.6 users drive it: its constructor
shapes, the ``timeout`` key, process templates for function tasks, fence /
wait, DDicts on the backend's runtime, GPUs in capacity(), and a start
deadline that names its step. Run under the launcher, on the real runtime."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from rhapsody import BackendError, ComputeTask, ResourceError, Session, TaskState, TaskValidationError
from rhapsody.testing import LoopRunner
from rhapsody.testing import tasks as fn
from rhapsody.testing.waiting import sleeper, wait_for_file, wait_for_state, wait_until_gone
from rhapsody_dragon import DragonBatchExecutionBackend, DragonExecutionBackend
from rhapsody_dragon.batch_tasks import BatchEntry


def test_upstream_shape_positional_and_keyword() -> None:
    b = DragonExecutionBackend({"disable_telem": True}, "upstream")
    assert (b.name, b.disable_telemetry) == ("upstream", True)
    b = DragonExecutionBackend(batch_kwargs={"disable_telem": True}, name="kw")
    assert (b.name, b.disable_telemetry) == ("kw", True)
    b = DragonExecutionBackend(None, "none-first")
    assert b.name == "none-first"
    assert DragonExecutionBackend().name == "dragon"


def test_own_shape_positional_still_works() -> None:
    b = DragonBatchExecutionBackend("mine", 1, True)
    assert (b.name, b.num_workers, b.disable_telemetry) == ("mine", 1, True)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((5,), {}, "first argument must be a name"),
        (("a",), {"name": "b"}, "multiple values for name"),
        (({},), {"batch_kwargs": {}}, "multiple values for batch_kwargs"),
        (({}, "x", 3), {}, "at most 2 positional"),
        ((), {"batch_kwargs": ["disable_telem"]}, "batch_kwargs must be a dict"),
        ((), {"start_timeout": 0}, "start_timeout must be a positive"),
    ],
)
def test_ambiguous_or_bad_arguments_are_refused(args: tuple[Any, ...], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        DragonExecutionBackend(*args, **kwargs)


def _run(tmp_path: Path, body: Callable[[DragonBatchExecutionBackend], Coroutine[Any, Any, Any]], **kw: Any) -> Any:
    run = LoopRunner(600)
    backend = DragonBatchExecutionBackend(name=kw.pop("name", "v3-features"), num_workers=1, **kw)

    async def go() -> Any:
        async with Session([backend], work_dir=tmp_path):
            await backend.start()  # a Session starts its backends on first use; these bodies may not submit first
            return await body(backend)

    try:
        return run(go())
    finally:
        run.close()


async def _submit_all(backend: DragonBatchExecutionBackend, tasks: list[ComputeTask]) -> list[ComputeTask]:
    await backend.submit_tasks(tasks)
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 300)
    return tasks


def test_timeout_key_ends_functions_and_executables(tmp_path: Path) -> None:
    pidfile = tmp_path / "slow.pid"
    slow_fn = ComputeTask(function=fn.sleep, args=(60,), task_backend_specific_kwargs={"timeout": 2})
    slow_exe = ComputeTask(
        executable="/bin/sh", arguments=["-c", f"echo $$ > {pidfile}; exec sleep 60"], task_backend_specific_kwargs={"timeout": 2}
    )
    quick = ComputeTask(function=fn.add, args=(1, 2), task_backend_specific_kwargs={"timeout": 120})
    _run(tmp_path, lambda b: _submit_all(b, [slow_fn, slow_exe, quick]))
    for t in (slow_fn, slow_exe):
        assert t.state is TaskState.FAILED and type(t.exception) is TimeoutError, (t.state, t.exception)
        assert "timeout of 2 s" in str(t.exception), t.exception
    assert quick.state is TaskState.DONE and quick.return_value == 3
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z", "the timed-out executable still runs"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_bad_timeout_fails_only_that_task(tmp_path: Path) -> None:
    bad = ComputeTask(function=fn.add, args=(1, 1), task_backend_specific_kwargs={"timeout": "soon"})
    good = ComputeTask(function=fn.add, args=(2, 2))
    _run(tmp_path, lambda b: _submit_all(b, [bad, good]))
    assert bad.state is TaskState.FAILED and isinstance(bad.exception, TaskValidationError)
    assert "timeout" in str(bad.exception)
    assert good.return_value == 4


def test_process_template_runs_a_function_in_its_own_process(tmp_path: Path) -> None:
    where = tmp_path / "tmpl-cwd"
    where.mkdir()
    in_cwd = ComputeTask(function=os.getcwd, task_backend_specific_kwargs={"process_template": {"cwd": str(where)}})
    with_env = ComputeTask(
        function=fn.getenv, args=("FROM_TMPL",), task_backend_specific_kwargs={"process_template": {"env": {"FROM_TMPL": "t1"}}}
    )
    as_job = ComputeTask(function=fn.getpid, task_backend_specific_kwargs={"process_templates": [(1, {"env": {"X": "1"}})]})
    native = ComputeTask(function=fn.getpid)
    failing = ComputeTask(function=fn.boom, args=("in a process",), task_backend_specific_kwargs={"process_template": {}})
    _run(tmp_path, lambda b: _submit_all(b, [in_cwd, with_env, as_job, native, failing]))
    assert in_cwd.state is TaskState.DONE and in_cwd.return_value == str(where), (in_cwd.exception, in_cwd.stderr)
    assert with_env.return_value == "t1", (with_env.exception, with_env.stderr)
    assert as_job.state is TaskState.DONE and isinstance(as_job.return_value, int), (as_job.exception, as_job.stderr)
    assert native.state is TaskState.DONE
    assert as_job.return_value != native.return_value, "a templated function runs in a process of its own, not a Batch worker"
    assert failing.state is TaskState.FAILED and "in a process" in str(failing.exception)


def test_function_job_beyond_this_batch_fails_at_once(tmp_path: Path) -> None:
    """Multi-rank function jobs need as many Batch workers as ranks; this
    2-vCPU box has one, so the request is refused rather than left waiting."""
    job = ComputeTask(function=fn.getpid, task_backend_specific_kwargs={"process_templates": [(2, {})]})
    _run(tmp_path, lambda b: _submit_all(b, [job]))
    assert job.state is TaskState.FAILED and isinstance(job.exception, ResourceError), job.exception


def test_fence_and_wait_return_once_earlier_tasks_ended(tmp_path: Path) -> None:
    marks = [tmp_path / f"ended{i}" for i in range(4)]

    def late_touch(i: int) -> ComputeTask:
        return ComputeTask(executable="/bin/sh", arguments=["-c", f"sleep 1; touch {marks[i]}"])

    async def body(b: DragonBatchExecutionBackend) -> list[list[bool]]:
        seen = []
        first = [late_touch(0), late_touch(1)]
        await b.submit_tasks(first)
        await asyncio.to_thread(b.fence, 300)
        seen.append([m.exists() for m in marks[:2]])
        second = [late_touch(2), late_touch(3)]
        await b.submit_tasks(second)
        await asyncio.to_thread(b.wait, 300)  # rhapsody-py 0.6's name
        seen.append([m.exists() for m in marks[2:]])
        await asyncio.wait_for(asyncio.gather(*first, *second), 120)
        return seen

    assert _run(tmp_path, body) == [[True, True], [True, True]]


def test_a_task_batch_fails_after_its_processes_ended_reports_how_they_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dragonhpc 0.15's Batch once failed a finished `sleep 1; touch` task in CI
    with "ProcessGroup manager is not in state State.DEAD" (closing the group
    after its process ended). That race cannot be caused on demand, so here
    Dragon's own client call stands in for it: Batch runs each process task for
    real, then `Job.get` raises that error instead of returning the exit code."""
    from dragon.workflows.batch import batch as dragon_batch  # heavy: imported by this test alone

    real_get = dragon_batch.Job.get

    def get_then_fail(self: Any, *args: Any, **kwargs: Any) -> Any:
        real_get(self, *args, **kwargs)
        raise RuntimeError("ProcessGroup manager is not in state State.DEAD")

    monkeypatch.setattr(dragon_batch.Job, "get", get_then_fail)
    said = ComputeTask(executable="/bin/sh", arguments=["-c", "echo said; echo warned >&2"])
    exits_3 = ComputeTask(executable="/bin/sh", arguments=["-c", "echo before; exit 3"])
    in_process = ComputeTask(function=fn.add, args=(2, 3), task_backend_specific_kwargs={"process_template": {}})
    on_worker = ComputeTask(function=fn.add, args=(4, 4))  # Batch's own workers: not a Job, untouched
    _run(tmp_path, lambda b: _submit_all(b, [said, exits_3, in_process, on_worker]))
    assert (said.state, said.exit_code, said.stdout, said.stderr) == (TaskState.DONE, 0, "said\n", "warned\n"), said.exception
    assert (exits_3.state, exits_3.exit_code, exits_3.stdout) == (TaskState.FAILED, 3, "before\n")
    assert (in_process.state, in_process.return_value) == (TaskState.DONE, 5), in_process.exception
    assert on_worker.return_value == 8


def test_a_failed_flush_only_delays_the_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch's private flush (which only hurries the hand-over of created tasks)
    raising stands in for it timing out on a loaded node. Before, the error ended
    the thread that creates tasks, and every task submitted after it waited for ever."""
    from dragon.workflows.batch import batch as dragon_batch  # heavy: imported by this test alone

    def flush_fails(self: Any, *args: Any, **kwargs: Any) -> None:
        raise TimeoutError("stand-in: the flush took longer than its 60 s")

    monkeypatch.setattr(dragon_batch.Batch, "_flush_client_request_worker", flush_fails)
    first, later = ComputeTask(function=fn.add, args=(1, 1)), ComputeTask(function=fn.add, args=(2, 2))

    async def body(b: DragonBatchExecutionBackend) -> list[Any]:
        await _submit_all(b, [first])
        await _submit_all(b, [later])
        return [first.return_value, later.return_value]

    assert _run(tmp_path, body, disable_batch_submission=True) == [2, 4], (first.exception, later.exception)


def test_an_outcome_that_cannot_be_read_fails_that_task_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading how a task ended raising (an OSError here stands in for, e.g., its
    output file vanishing under it) fails that task with a BackendError saying
    so; the thread that hears from Batch goes on, and the next task ends as usual."""
    real_finish = BatchEntry.finish
    victim = ComputeTask(function=fn.add, args=(1, 1))

    def finish(self: BatchEntry, handle: Any, value: Any) -> None:
        if handle.uid == victim.uid:
            raise OSError("stand-in: its output vanished")
        real_finish(self, handle, value)

    monkeypatch.setattr(BatchEntry, "finish", finish)
    after = ComputeTask(function=fn.add, args=(3, 3))

    async def body(b: DragonBatchExecutionBackend) -> None:
        await _submit_all(b, [victim])
        await _submit_all(b, [after])

    _run(tmp_path, body)
    assert victim.state is TaskState.FAILED and isinstance(victim.exception, BackendError), victim.exception
    assert "reading how it ended failed: OSError: stand-in: its output vanished" in str(victim.exception)
    assert (after.state, after.return_value) == (TaskState.DONE, 6), after.exception


def test_a_cancelled_executable_leaves_nothing_in_the_work_dir(tmp_path: Path) -> None:
    """The wrapper of a cancelled task may still be ending after the backend
    cleaned up after it; what it writes then must not create files anew."""
    pidfile = tmp_path / "victim.pid"
    victim = sleeper(pidfile)

    async def body(b: DragonBatchExecutionBackend) -> list[str]:
        await b.submit_tasks([victim])
        pid = int(await wait_for_file(pidfile, 120))
        await wait_for_state(victim, TaskState.RUNNING, timeout=120)
        assert await b.cancel_task(victim.uid), (victim.state, victim.exception)
        await wait_until_gone(pid)
        await asyncio.sleep(3)  # the wrapper's own end: 0.2 s after its program's, or when Batch stops it
        return sorted(entry.name for entry in b.work_dir.iterdir() if entry.name.startswith(victim.uid))

    assert _run(tmp_path, body) == []
    assert victim.state is TaskState.CANCELED


def test_create_ddict_on_the_backend_runtime(tmp_path: Path) -> None:
    async def body(b: DragonBatchExecutionBackend) -> Any:
        d = await asyncio.to_thread(b.create_ddict, 1, 1, 4 << 20)
        try:
            d["answer"] = 42
            return d["answer"]
        finally:
            d.destroy()

    assert _run(tmp_path, body) == 42


def test_create_ddict_before_start_is_refused() -> None:
    with pytest.raises(BackendError, match="start it before"):
        DragonExecutionBackend(name="idle").create_ddict()


def test_capacity_counts_the_gpus_dragon_sees(tmp_path: Path) -> None:
    from dragon.native.machine import Node, System

    async def body(b: DragonBatchExecutionBackend) -> Any:
        return b.capacity()

    capacity = _run(tmp_path, body)
    expected = sum(Node(h).num_gpus for h in System().nodes)
    assert capacity.gpus == expected and capacity.gpus is not None  # 0 on this GPU-less box, never None once started


def test_start_timeout_names_engine_step_and_seconds_and_retries(tmp_path: Path) -> None:
    """A real Batch() takes seconds to bootstrap: with a 1 s start deadline
    both attempts time out for real; a later backend still starts."""
    run = LoopRunner(600)

    async def go() -> str:
        backend = DragonBatchExecutionBackend(name="v3-deadline", num_workers=1, start_timeout=1)
        backend.work_dir = tmp_path
        try:
            await backend.start()
        except BackendError as exc:
            return str(exc)
        finally:
            await backend.shutdown()
        return "started"

    try:
        message = run(go())
    finally:
        run.close()
    assert "dragon-batch backend 'v3-deadline'" in message, message
    assert "Batch() bootstrap (attempt 1 of 2) did not finish within" in message, message
    assert "attempt 2 of 2" in message and "waited" in message, message
    after = ComputeTask(function=fn.add, args=(20, 22))
    _run(tmp_path, lambda b: _submit_all(b, [after]), name="v3-after-deadline")
    assert after.return_value == 42, after.exception


def test_tasks_fail_once_batch_poll_keeps_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Batch.poll`` failing for good (made to raise here: it stands in for a
    Batch manager that died, which cannot be caused without taking down the
    runtime the whole test run shares). Before, the monitor logged and tried
    again every 0.5 s for ever, and no task ended. Now, after `POLL_FAILING_FOR`
    (1 s here) the running task fails naming the backend and the error, its
    program is stopped, and a task submitted later fails at once."""
    from rhapsody_dragon import batch

    monkeypatch.setattr(batch, "POLL_FAILING_FOR", 1.0)
    pidfile = tmp_path / "running.pid"
    running, later = sleeper(pidfile), ComputeTask(function=fn.noop)

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("stand-in: the Batch manager is gone")

    async def body(b: DragonBatchExecutionBackend) -> int:
        await b.submit_tasks([running])
        pid = int(await wait_for_file(pidfile, 120))
        await wait_for_state(running, TaskState.RUNNING, timeout=120)
        monkeypatch.setattr(b.batch, "poll", unreachable)
        await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 30)
        await wait_until_gone(pid)
        await b.submit_tasks([later])
        await asyncio.wait_for(asyncio.gather(later, return_exceptions=True), 30)
        return pid

    _run(tmp_path, body, name="v3-poll-broken")
    for task in (running, later):
        assert task.state is TaskState.FAILED and isinstance(task.exception, BackendError), task.exception
        assert "'v3-poll-broken': Batch.poll failed for 1 s; the last time: ConnectionError: stand-in" in str(task.exception)
