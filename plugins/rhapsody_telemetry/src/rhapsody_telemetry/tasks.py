"""What telemetry says about one ended task: span attributes, the terminal
event, the times its histograms get."""

from __future__ import annotations

from typing import Any

import attrs

from rhapsody_telemetry.events import BaseEvent, TaskCanceled, TaskCompleted, TaskFailed, TaskStarted, TaskSubmitted, new_event_id

STATUS = {"DONE": "completed", "FAILED": "failed", "CANCELED": "canceled"}
EVENT_OF = {"SUBMITTED": TaskSubmitted, "RUNNING": TaskStarted, "DONE": TaskCompleted, "FAILED": TaskFailed, "CANCELED": TaskCanceled}
TERMINAL_EVENTS = {"TaskCompleted": "DONE", "TaskFailed": "FAILED", "TaskCanceled": "CANCELED"}


def task_type(task: Any) -> str:
    if task.kind == "compute":
        return "executable" if getattr(task, "executable", None) else "function"
    return str(task.kind)


def executable(task: Any) -> str:
    value = getattr(task, "executable", None)
    if value:
        return str(value)
    function = getattr(task, "function", None)
    return getattr(function, "__qualname__", None) or getattr(function, "__name__", "") or ""


@attrs.define
class Times:
    """Wall-clock seconds of one task: submitted (or first seen), started (None:
    never seen running), ended."""

    submitted: float
    started: float | None
    ended: float

    @property
    def run(self) -> float:
        return self.ended - self.started if self.started is not None else 0.0

    @property
    def wait(self) -> float | None:
        return self.started - self.submitted if self.started is not None else None


def times_of(task: Any, state: str) -> Times:
    stamps = task.timestamps
    ended = stamps[state]
    started = stamps.get("RUNNING")
    return Times(stamps.get("SUBMITTED", started if started is not None else ended), started, ended)


def span_attributes(session_id: str, backend: str, task: Any, state: str, times: Times) -> dict[str, Any]:
    resources = task.resources
    attributes: dict[str, Any] = {
        "session_id": session_id,
        "task_id": task.uid,
        "backend": backend,
        "kind": task.kind,
        "task_type": task_type(task),
        "executable": executable(task),
        "status": STATUS[state],
        "resources.ranks": resources.ranks,
        "resources.cores_per_rank": resources.cores_per_rank,
        "resources.gpus_per_rank": resources.gpus_per_rank,
        "run_seconds": times.run,
    }
    if times.started is not None:
        attributes["started_at"] = times.started
        attributes["queue_wait_seconds"] = times.wait
    else:
        attributes["incomplete_lifecycle"] = True
    if task.exit_code is not None:
        attributes["exit_code"] = task.exit_code
    if state == "FAILED":
        attributes["error_type"] = type(task.exception).__name__ if task.exception is not None else "unknown"
    worker = getattr(task, "worker", None)  # where the engine said it ran (rhapsody-core >= the one with task.worker)
    if worker is not None:
        attributes["worker"] = worker
    return attributes


def transition_fields(session_id: str, backend: str, task: Any, state: str, emit_time: float) -> tuple[type[BaseEvent], dict[str, Any]]:
    """The event class and fields of one hook-observed transition, dated when
    it happened (the checkpoint writes the fields without building the event)."""
    attributes: dict[str, Any] = {"executable": executable(task), "task_type": task_type(task)}
    worker = getattr(task, "worker", None)
    if worker is not None and state != "SUBMITTED":
        attributes["worker"] = worker
    fields: dict[str, Any] = {
        "event_id": new_event_id(),
        "event_time": task.timestamps.get(state, emit_time),
        "emit_time": emit_time,
        "session_id": session_id,
        "backend": backend,
        "task_id": task.uid,
        "attributes": attributes,
    }
    if state in STATUS:
        times = times_of(task, state)
        fields["duration_seconds"] = times.run
        if times.started is None:
            attributes["incomplete_lifecycle"] = True
        if state == "FAILED":
            fields["error_type"] = attributes["error_type"] = type(task.exception).__name__ if task.exception is not None else "unknown"
        if task.exit_code is not None:
            attributes["exit_code"] = task.exit_code
    return EVENT_OF[state], fields


@attrs.define
class Flight:
    """A task known only from emitted events (radical.asyncflow's), until it ends."""

    backend: str
    first: float
    context: Any
    attributes: dict[str, Any]
    submitted: float | None = None
    started: float | None = None
