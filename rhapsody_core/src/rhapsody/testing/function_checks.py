"""Conformance: sync and async functions."""

from __future__ import annotations

from typing import Any

import pytest

from rhapsody.states import TaskState
from rhapsody.task import ComputeTask
from rhapsody.testing import tasks as fn
from rhapsody.testing.base import ConformanceBase
from rhapsody.testing.waiting import LoopRunner, await_task


class FunctionChecks(ConformanceBase):
    # ------------------------------------------------------------------ functions
    def test_sync_function(self, run: LoopRunner, submit: Any) -> None:
        self._need(functions=True)
        (t,) = submit(ComputeTask(function=fn.add, args=(2, 3)))
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert t.return_value == 5
        assert run(await_task(t)) is t

    def test_async_function(self, submit: Any) -> None:
        self._need(functions=True)
        (t,) = submit(ComputeTask(function=fn.async_add, args=(20,), kwargs={"b": 22, "delay": 0.01}))
        assert t.state is TaskState.DONE, (t.exception, t.stderr)
        assert t.return_value == 42

    def test_function_exception_is_the_original(self, run: LoopRunner, submit: Any) -> None:
        self._need(functions=True)
        sync_t, async_t = submit(
            ComputeTask(function=fn.boom, args=("kaput",)),
            ComputeTask(function=fn.async_boom, args=("async kaput",)),
        )
        for t, text in ((sync_t, "kaput"), (async_t, "async kaput")):
            assert t.state is TaskState.FAILED
            assert type(t.exception).__name__ == "TaskBoom" and str(t.exception) == text
            assert "TaskBoom" in (t.stderr or ""), "the traceback text belongs in stderr"
            with pytest.raises(fn.TaskBoom):
                run(await_task(t))

    def test_function_output_is_per_task(self, submit: Any) -> None:
        """What each function prints lands in its own task's stdout / stderr,
        also when many sync and ``async def`` tasks print at the same time."""
        self._need(functions=True)
        count = max(4 * self.concurrency, 16)
        tasks = [
            ComputeTask(function=fn.async_chatty if i % 2 else fn.chatty, args=(f"task-{i:03d}",), kwargs={"lines": 3})
            for i in range(count)
        ]
        submit(*tasks)
        for i, t in enumerate(tasks):
            tag = f"task-{i:03d}"
            assert t.state is TaskState.DONE, (tag, t.state, t.exception, t.stderr)
            assert t.return_value == tag
            assert (t.stdout or "").splitlines() == [f"{tag} out {n}" for n in range(3)], (tag, t.stdout)
            err_lines = [line for line in (t.stderr or "").splitlines() if line.startswith("task-")]
            assert err_lines == [f"{tag} err {n}" for n in range(3)], (tag, t.stderr)
