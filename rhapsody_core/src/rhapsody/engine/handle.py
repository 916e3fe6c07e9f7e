"""`TaskHandle`: how an engine reports what happened to one task.

Core hands the engine one handle per task, as ``concurrent.futures`` hands an
executor a Future. Every method is safe to call from any thread, any number of
times: the first report that ends the task wins, later ones are dropped (an
engine racing a cancel cannot undo it), and reports made off the event loop are
delivered to it in order, many per wake-up.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rhapsody.errors import WorkerLostError

if TYPE_CHECKING:
    from rhapsody.engine.launch import LaunchSpec
    from rhapsody.engine.outcome import Outcome
    from rhapsody.execution.tracker import TaskTracker
    from rhapsody.task import BaseTask


class TaskHandle:
    """``task``: the task (read its fields; never set them). ``launch``: the
    resolved `LaunchSpec` of an executable task, None for a function or an AI
    task. ``engine_data``: a slot for the engine's own per-task state."""

    __slots__ = ("_tracker", "engine_data", "launch", "task")

    def __init__(self, task: BaseTask, launch: LaunchSpec | None, tracker: TaskTracker) -> None:
        self.task, self.launch, self._tracker = task, launch, tracker
        self.engine_data: Any = None

    @property
    def uid(self) -> str:
        return self.task.uid

    @property
    def attempt(self) -> int:
        """Which attempt of the task this handle runs (1 = the first; core
        hands the engine a new handle for each retry)."""
        return self.task.attempt

    @property
    def cancel_requested(self) -> bool:
        """Core asked to stop this task (user cancel, timeout, shutdown) or it
        already ended: an engine about to start it should not."""
        return self._tracker.stop_wanted(self.task)

    def running(self, worker: str | None = None) -> None:
        """The engine started the task. Report it when the task really starts
        executing: the task's timeout counts from here, and ``task.timestamps``
        say this moment even when the event loop hears of it a little later.
        ``worker`` says where it runs (a non-empty str the engine picks: a Dask
        worker address, a host and pid, a Dragon process, an RP pilot); it
        lands in ``task.worker``."""
        if worker is not None and (type(worker) is not str or not worker):
            raise TypeError(f"task {self.task.uid}: running(worker=...) takes a non-empty str or None, got {worker!r}")
        self._tracker.post_running(self, worker)

    def done(self, return_value: Any = None, *, exit_code: int | None = None, stdout: str | None = None, stderr: str | None = None) -> None:
        """The task finished: DONE, unless ``exit_code`` is non-zero (then
        FAILED with `rhapsody.TaskExecutionError`)."""
        self._tracker.post(self._tracker.report_done, self, return_value, exit_code, stdout, stderr)

    def failed(
        self, exception: BaseException, *, exit_code: int | None = None, stdout: str | None = None, stderr: str | None = None
    ) -> None:
        """The task failed with ``exception``: the function's own, or a
        `rhapsody.BackendError` for engine trouble (not the task's fault:
        retried while the task has ``retries`` left; see also `lost`). Without ``stderr`` the
        exception's traceback text is stored there."""
        self._tracker.post(self._tracker.report_failed, self, exception, exit_code, stdout, stderr, None)

    def lost(self, reason: str, *, stdout: str | None = None, stderr: str | None = None) -> None:
        """The worker, process or pilot running the task died under it (not the
        task's fault): FAILED with `rhapsody.errors.WorkerLostError`, which
        core retries while the task has ``retries`` left. ``reason`` says what
        was lost, e.g. "the Dask worker tcp://... died"."""
        self.failed(WorkerLostError(f"task {self.task.uid}: {reason}"), stdout=stdout, stderr=stderr if stderr is not None else reason)

    def answered(self, response: Any, metrics: dict[str, Any] | None = None) -> None:
        """An AI task finished: DONE with its ``response`` (one text per prompt:
        a list, also for a single prompt, as rhapsody-py gives it) and the
        backend's ``metrics``."""
        self._tracker.post(self._tracker.set_answered, self, response, metrics)

    def canceled(self) -> None:
        """The engine stopped the task on its own account."""
        self._tracker.post(self._tracker.set_canceled, self)

    def finish(self, outcome: Outcome, *, more: bool = False) -> None:
        """End the task as an engine-side `Outcome` says. ``more=True``: the
        engine reports this from the thread that is already running its next
        task (a stream of short ones): the event loop may hear of it with the
        next report, at most `rhapsody.execution.tracker.TICK` seconds later,
        instead of being woken for each task; ``task.timestamps`` still say when
        it ended."""
        tracker = self._tracker
        post, at = (tracker.post_soon, time.time()) if more else (tracker.post, None)
        if outcome.error is not None:
            post(tracker.report_failed, self, outcome.error, outcome.exit_code, outcome.stdout, outcome.stderr, outcome.traceback, at)
        else:
            post(tracker.report_done, self, outcome.value, outcome.exit_code, outcome.stdout, outcome.stderr, at)

    def __repr__(self) -> str:
        return f"<TaskHandle {self.task.uid} {self.task.state.value}>"
