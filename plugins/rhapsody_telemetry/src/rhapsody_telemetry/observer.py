"""What telemetry hangs on the backends it watches.

`TransitionTap.observe` is a state observer of each watched backend
(`Backend.add_state_observer`: called directly, not through the plugin
manager, on every transition); the submit hook stays a pluggy hook (once a
batch). Both run on the hot path, so they do the least that keeps the counts
current: a submission or a start is counted on the spot, an end is queued for
`TelemetryManager` to turn into a span and statistics a few times a second,
off that path. When somebody wants every transition as an event (a
subscriber, an enricher, the checkpoint) every transition is queued instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rhapsody.hookspecs import hookimpl
from rhapsody.states import TaskState
from rhapsody_telemetry.ledger import Counts

_NEW, _SUBMITTED, _RUNNING = TaskState.NEW, TaskState.SUBMITTED, TaskState.RUNNING


class Watched(NamedTuple):
    backend: Any
    counts: Counts  # its counts in the ledger
    name: str


class TransitionTap:
    """Counts and queues ``(backend, task, old, new)`` for the watched backends."""

    def __init__(self) -> None:
        #: id() of each watched Backend -> what its queue entries start with
        self.watched: dict[int, Watched] = {}
        #: ``(watched, task, old state, new state)``
        self.queue: list[tuple[Watched, Any, Any, Any]] = []
        #: task uid -> the OTel context active when it was submitted, when that is not the default
        self.contexts: dict[str, Any] = {}
        self.capture_context: Any = None  # set by the manager: returns the context to keep, or None
        self.active = False  # between the manager's start and stop
        self.every_transition = False  # queue submissions and starts too (they become events)

    def watch(self, backend: Any, counts: Counts) -> bool:
        """Start watching ``backend``; False when it was watched already."""
        if id(backend) in self.watched:
            return False
        self.watched[id(backend)] = Watched(backend, counts, backend.name)
        backend.add_state_observer(self.observe)
        return True

    def unwatch_all(self) -> None:
        for watched in self.watched.values():
            watched.backend.remove_state_observer(self.observe)
        self.watched.clear()

    def observe(self, backend: Any, task: Any, old_state: Any, new_state: Any) -> None:
        watched = self.watched.get(id(backend))
        if watched is None or not self.active:
            return
        if self.every_transition:
            self.queue.append((watched, task, old_state, new_state))
        elif new_state is _SUBMITTED:
            if old_state is _NEW:
                watched.counts.submitted += 1
            else:
                retried(watched.counts, old_state)
        elif new_state is _RUNNING:
            counts = watched.counts
            counts.started += 1
            counts.running += 1
        else:
            self.queue.append((watched, task, old_state, new_state))

    @hookimpl
    def rhapsody_task_submit(self, backend: Any, tasks: Any) -> None:
        # One look per batch: a span active around submit_tasks (a workflow
        # scope) becomes the parent of these tasks' spans.
        if id(backend) in self.watched and self.capture_context is not None:
            context = self.capture_context()
            if context is not None:
                for task in tasks:
                    self.contexts[task.uid] = context


def retried(counts: Counts, old_state: Any) -> None:
    """A failed attempt went back to SUBMITTED for another: the same task, not
    one more submitted, and no longer running. (Its RUNNING time is gone by
    now; one running since before telemetry started was never counted, hence
    the floor.)"""
    if old_state is _RUNNING and counts.running > 0:
        counts.running -= 1


def count_end(counts: Counts, task: Any, old_state: Any, state: str, started_at: float) -> None:
    """An end: one more completed, failed or canceled, and one fewer running,
    unless it ran since before telemetry started (never counted as running)."""
    if old_state is _RUNNING and task.timestamps.get("RUNNING", 0.0) >= started_at:
        counts.running -= 1
    counts.add_end(state)
