"""Core's share of the defects found by probing as a hostile user (issue 11)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from rhapsody import ComputeTask, Session, TaskValidationError


def test_wait_tasks_given_a_dict_names_its_uid(tmp_path) -> None:
    """Item 12: the error names the task's uid, not the whole dict."""

    async def go() -> None:
        async with Session(work_dir=tmp_path) as session:
            desc = {"uid": "my-task-7", "executable": "/bin/true", "arguments": ["x" * 500]}
            with pytest.raises(TaskValidationError) as info:
                await session.wait_tasks([desc])  # type: ignore[list-item]
            text = str(info.value)
            assert "my-task-7" in text and "xxxx" not in text
            assert "dict" in text

    asyncio.run(go())


def test_warnings_without_enable_logging_are_readable_lines() -> None:
    """Item 12: with logging never configured, a warning prints as one readable
    line through Python's last-resort handler, not as a dict repr."""
    code = (
        "from rhapsody.log import get_logger\n"
        "get_logger('rhapsody.backend', backend='b1').warning('task.cancel_failed', task='t1', error='boom')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("rhapsody: task.cancel_failed"), line
    assert "backend=b1" in line and "task=t1" in line and "error=boom" in line
    assert "{" not in line and "'event'" not in line


def test_capacity_is_checked_per_dimension(tmp_path) -> None:
    """Item 9: 64 cores per rank never fit a 2-core node, whatever the totals."""
    from rhapsody import Backend, Capacity, ResourceError, Resources, TaskState

    class TwoCores:
        def capacity(self) -> Capacity:
            return Capacity(cores=128, cores_per_rank=2, ranks=64)

        async def start(self, context) -> None: ...

        async def submit(self, handles) -> None:
            for handle in handles:
                handle.done(None)

        async def cancel(self, handle) -> bool:
            return False

        async def stop(self) -> None: ...

    wide = ComputeTask(function=print, resources=Resources(cores_per_rank=64))
    fits = ComputeTask(function=print, resources=Resources(ranks=4, cores_per_rank=2))

    async def go() -> None:
        async with Session(backends=[Backend(TwoCores(), "two")], work_dir=tmp_path) as session:
            await session.submit_tasks([wide, fits])
            await session.wait_tasks([wide, fits], timeout=30)

    asyncio.run(go())
    assert wide.state is TaskState.FAILED and isinstance(wide.exception, ResourceError)
    assert "64 cores per rank" in str(wide.exception)
    assert fits.state is TaskState.DONE
