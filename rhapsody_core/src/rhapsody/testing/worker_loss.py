"""Conformance for engines whose workers are processes that can die: a task
whose worker is killed mid-run is retried by core and ends DONE, having run to
its end exactly once.

Add `WorkerLossChecks` to a conformance class whose backend runs functions in
worker processes (not threads of the test process: the task kills the process
it runs in), and set `absorbed_deaths` to how many deaths of a started task
the engine itself hides by rerunning it before it reports the loss.
"""

from __future__ import annotations

from pathlib import Path

from rhapsody.errors import WorkerLostError
from rhapsody.session import Session
from rhapsody.states import TaskState
from rhapsody.task import ComputeTask
from rhapsody.testing import tasks as fn
from rhapsody.testing.base import ConformanceBase
from rhapsody.testing.waiting import LoopRunner


class WorkerLossChecks(ConformanceBase):
    #: deaths of a started task the engine reruns on its own before reporting the loss
    absorbed_deaths: int = 0
    #: seconds the task runs before it kills its worker: long enough for the engine to have seen it start
    kill_after: float = 2.0

    def test_killed_worker_is_retried_and_done_once(self, run: LoopRunner, session: Session, tmp_path: Path) -> None:
        """The task SIGKILLs its own worker process (a real kill of a real
        worker, timed by the task so it lands mid-run) until the engine
        reports the loss once; core's retry then runs it to its end."""
        self._need(functions=True)
        deaths = self.absorbed_deaths + 1
        t = ComputeTask(function=fn.die_then_succeed, args=(str(tmp_path), deaths, self.kill_after), retries=2)

        async def go() -> None:
            await session.submit_tasks([t])
            await session.wait_tasks([t], timeout=self.deadline)

        run(go())
        starts = (tmp_path / "starts").read_text().split()
        done = (tmp_path / "done").read_text().split() if (tmp_path / "done").exists() else []
        assert t.state is TaskState.DONE, (t.state, t.exception, t.attempt_errors, starts)
        assert len(done) == 1, f"the task ran to its end {len(done)} times"
        assert len(starts) >= deaths + 1
        assert t.return_value == int(done[0])
        assert t.attempt >= 2, "the engine hid every death: core's retry was never exercised"
        assert len(t.attempt_errors) == t.attempt - 1
        assert all(isinstance(e, WorkerLostError) for e in t.attempt_errors), t.attempt_errors

    def test_killed_worker_without_retries_fails_as_lost(self, run: LoopRunner, session: Session, tmp_path: Path) -> None:
        self._need(functions=True)
        t = ComputeTask(function=fn.die_then_succeed, args=(str(tmp_path), self.absorbed_deaths + 1, self.kill_after), retries=0)

        async def go() -> None:
            await session.submit_tasks([t])
            await session.wait_tasks([t], timeout=self.deadline)

        run(go())
        assert t.state is TaskState.FAILED
        assert isinstance(t.exception, WorkerLostError), t.exception
        assert t.attempt == 1 and t.attempt_errors == []
        assert not (tmp_path / "done").exists()
