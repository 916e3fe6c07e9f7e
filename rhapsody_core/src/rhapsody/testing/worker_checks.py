"""Conformance: where a task ran (``task.worker``, from `TaskHandle.running`)."""

from __future__ import annotations

from typing import Any

from rhapsody.session import Session
from rhapsody.states import TaskState
from rhapsody.task import BaseTask, ComputeTask
from rhapsody.testing import tasks as fn
from rhapsody.testing.base import ConformanceBase


class WorkerChecks(ConformanceBase):
    def test_worker_says_where_each_task_ran(self, session: Session, submit: Any) -> None:
        """An engine that reports workers names one (a non-empty str) for every
        task that ran, already when the task is RUNNING, and it stays put until
        the end; one that does not leaves ``task.worker`` None."""
        tasks: list[BaseTask] = []
        if self.runs_functions:
            tasks += [ComputeTask(function=fn.sleep, args=(0.2,)), ComputeTask(function=fn.add, args=(1, 2))]
        if self.runs_executables:
            tasks += [ComputeTask(executable="/bin/sh", arguments=["-c", "sleep 0.2"])]
        uids = {t.uid for t in tasks}
        at_running: dict[str, Any] = {}

        def seen(task: Any, state: str) -> None:
            if state == TaskState.RUNNING.value and getattr(task, "uid", None) in uids:
                at_running[task.uid] = task.worker

        backend = next(iter(session.backends.values()))
        backend.register_callback(seen)
        submit(*tasks)
        for t in tasks:
            assert t.state is TaskState.DONE, (t.uid, t.state, t.exception, t.stderr)
            if self.reports_worker:
                assert isinstance(t.worker, str) and t.worker.strip(), (t.uid, t.worker)
                assert at_running[t.uid] == t.worker, (t.uid, at_running.get(t.uid), t.worker)
            else:
                assert t.worker is None, f"{backend.name}: declared reports_worker=False but said {t.worker!r}"
