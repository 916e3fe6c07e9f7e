"""The core conformance suite against the real Dragon runtime, for V1, V2, V3.
Run under the launcher: ``dragon python -m pytest -p no:cacheprovider <this dir>``."""

from __future__ import annotations

import socket
from pathlib import Path

from rhapsody import ComputeTask, ResourceError, Resources, Session, TaskState
from rhapsody.testing import BackendConformance, LoopRunner, WorkerLossChecks
from rhapsody.testing import tasks as fn
from rhapsody_dragon import DragonBatchExecutionBackend, DragonPoolExecutionBackend, DragonProcessExecutionBackend


class TestDragonPool(BackendConformance, WorkerLossChecks):
    samples_resources = True
    reports_worker = True
    concurrency = 2
    burst_size = 1000
    runs_multi_rank = False  # one worker process per task

    def make_backend(self) -> DragonPoolExecutionBackend:
        return DragonPoolExecutionBackend(name="dragon_v2", num_workers=2)


class TestDragonProcess(BackendConformance, WorkerLossChecks):
    samples_resources = True
    reports_worker = True
    concurrency = 2
    burst_size = 20  # a Python process per task: ~0.4 s each idle, several s on a loaded 2-core box

    def make_backend(self) -> DragonProcessExecutionBackend:
        return DragonProcessExecutionBackend(name="dragon_v1", num_workers=2)

    def test_multi_rank_executable(self, submit) -> None:
        (t,) = submit(ComputeTask(executable="/bin/sh", arguments=["-c", "echo rank=$RHAPSODY_RANK"], resources=Resources(ranks=3)))
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert t.stdout.split() == ["rank=0", "rank=1", "rank=2"], "ranks' output comes in rank order"

    def test_multi_rank_function(self, submit) -> None:
        (t,) = submit(ComputeTask(function=fn.getenv, args=("RHAPSODY_RANK",), resources=Resources(ranks=2)))
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert t.return_value == ["0", "1"]

    def test_multi_rank_failure_fails_task(self, submit) -> None:
        (t,) = submit(
            ComputeTask(executable="/bin/sh", arguments=["-c", '[ "$RHAPSODY_RANK" = 1 ] && exit 4; exit 0'], resources=Resources(ranks=2))
        )
        assert t.state is TaskState.FAILED and t.exit_code == 4

    def test_multi_rank_capture_to_files(self, submit) -> None:
        (t,) = submit(
            ComputeTask(executable="/bin/sh", arguments=["-c", "echo r$RHAPSODY_RANK"], resources=Resources(ranks=2), capture_stdio=True)
        )
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert Path(t.stdout).read_text().split() == ["r0", "r1"]


class TestDragonBatch(BackendConformance):
    """Batch runs ~4 function tasks/s here: small burst, generous deadlines."""

    samples_resources = True
    reports_worker = True
    concurrency = 1  # Batch: one worker per physical core, one on a 2-vCPU box
    burst_size = 24
    deadline = 300.0
    start_timeout = 120.0
    runs_multi_rank = False  # Batch places at most one rank per worker: one here

    def make_backend(self) -> DragonBatchExecutionBackend:
        return DragonBatchExecutionBackend(name="dragon", num_workers=1)

    def test_worker_is_the_process_that_ran_it(self, submit) -> None:
        """``task.worker``: this host and the pid the function (in Batch's
        worker) or the program itself saw."""
        call, program = submit(ComputeTask(function=fn.getpid), ComputeTask(executable="/bin/sh", arguments=["-c", "echo $$"]))
        assert call.state is TaskState.DONE and program.state is TaskState.DONE, (call.exception, program.stderr)
        host = socket.gethostname()
        assert call.worker == f"{host}/pid {call.return_value}"
        assert program.worker == f"{host}/pid {int(program.stdout)}"

    def test_ranks_beyond_batch_capacity_fail_at_once(self, submit) -> None:
        (t,) = submit(ComputeTask(executable="/bin/true", resources=Resources(ranks=8)))
        assert t.state is TaskState.FAILED and isinstance(t.exception, ResourceError)

    def test_process_templates_beyond_capacity_fail(self, submit) -> None:
        t = ComputeTask(executable="/bin/true", task_backend_specific_kwargs={"process_templates": [(1, {}), (1, {})]})
        submit(t)
        assert t.state is TaskState.FAILED and isinstance(t.exception, ResourceError), t.exception

    def test_process_template_env_passes_through(self, submit) -> None:
        t = ComputeTask(
            executable="/bin/sh",
            arguments=["-c", "echo $FROM_TEMPLATE"],
            task_backend_specific_kwargs={"process_template": {"env": {"FROM_TEMPLATE": "tmpl"}}},
        )
        submit(t)
        assert t.state is TaskState.DONE and t.stdout.strip() == "tmpl", (t.exception, t.stderr)

    def test_process_template_cwd_is_checked_like_any_cwd(self, submit, tmp_path: Path) -> None:
        t = ComputeTask(executable="/bin/pwd", task_backend_specific_kwargs={"process_template": {"cwd": str(tmp_path / "gone")}})
        submit(t)
        assert t.state is TaskState.FAILED and t.exit_code == 126, (t.state, t.exit_code, t.stderr)


class TestDragonBatchStream:
    """Stream mode (disable_batch_submission=True): each task is its own batch."""

    def test_stream_mode_runs_tasks(self, tmp_path: Path) -> None:
        run = LoopRunner(300)
        backend = DragonBatchExecutionBackend(name="dragon-stream", num_workers=1, disable_batch_submission=True)
        tasks = [ComputeTask(function=fn.add, args=(i, i)) for i in range(3)] + [ComputeTask(executable="/bin/echo", arguments=["s"])]

        async def go() -> None:
            async with Session([backend], work_dir=tmp_path) as s:
                await s.submit_tasks(tasks)
                await s.wait_tasks(tasks)

        try:
            run(go())
        finally:
            run.close()
        assert [t.return_value for t in tasks[:3]] == [0, 2, 4]
        assert tasks[3].stdout.strip() == "s"
