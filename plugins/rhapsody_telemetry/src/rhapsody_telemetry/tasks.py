"""What telemetry says about one ended task: span attributes, the terminal
event, the times its histograms get."""

from __future__ import annotations

import random
from typing import Any, NamedTuple

import attrs

from rhapsody_telemetry.events import BaseEvent, TaskCanceled, TaskCompleted, TaskFailed, TaskStarted, TaskSubmitted, new_event_id

STATUS = {"DONE": "completed", "FAILED": "failed", "CANCELED": "canceled"}
EVENT_OF = {"SUBMITTED": TaskSubmitted, "RUNNING": TaskStarted, "DONE": TaskCompleted, "FAILED": TaskFailed, "CANCELED": TaskCanceled}
TERMINAL_EVENTS = {"TaskCompleted": "DONE", "TaskFailed": "FAILED", "TaskCanceled": "CANCELED"}


def task_type(task: Any) -> str:
    return _task_type(task.kind, getattr(task, "executable", None))


def _task_type(kind: str, program: str | None) -> str:
    if kind == "compute":
        return "executable" if program else "function"
    return str(kind)


def executable(task: Any) -> str:
    return _executable(getattr(task, "executable", None), getattr(task, "function", None))


def _executable(program: str | None, function: Any) -> str:
    if program:
        return str(program)
    return getattr(function, "__qualname__", None) or getattr(function, "__name__", "") or ""


class TaskEnd(NamedTuple):
    """What a task's span says, read from the task when it ended (the task
    itself is not kept: its result may be large). Its first three fields
    are its `TaskTimes`."""

    backend: str
    run: float | None
    wait: float | None
    state: str
    uid: str
    kind: str
    program: str | None
    function: Any
    resources: Any
    exit_code: int | None
    error_type: str | None
    failure: str | None  # the span's status description: "<type>: <message>"
    worker: str | None
    submitted: float
    started: float | None
    ended: float
    context: Any  # the OTel context its span's parent comes from (None: the session span)
    span_id: int

    @property
    def start_ns(self) -> int:
        return int(self.submitted * 1e9)

    @property
    def end_ns(self) -> int:
        return int(self.ended * 1e9)


class TaskTimes(NamedTuple):
    """Seconds a task ran and waited (None: never seen running), for the statistics."""

    backend: str
    run: float | None
    wait: float | None


def task_end(backend: str, task: Any, state: str, context: Any) -> TaskEnd:
    stamps = task.timestamps
    ended = stamps[state]
    started = stamps.get("RUNNING")
    submitted = stamps.get("SUBMITTED", started if started is not None else ended)
    error_type = failure = None
    if state == "FAILED":
        exception = task.exception
        error_type = type(exception).__name__ if exception is not None else "unknown"
        failure = f"{error_type}: {exception}"[:500]
    # tuple.__new__ with one tuple: a NamedTuple built without its Python-level __new__ (once per task)
    return tuple.__new__(
        TaskEnd,
        (
            backend,
            ended - started if started is not None else None,
            started - submitted if started is not None else None,
            state,
            task.uid,
            task.kind,
            getattr(task, "executable", None),
            getattr(task, "function", None),
            task.resources,
            task.exit_code,
            error_type,
            failure,
            getattr(task, "worker", None),  # where the engine said it ran (rhapsody-core >= the one with task.worker)
            submitted,
            started,
            ended,
            context,
            random.getrandbits(64) or 1,  # 0 is no span id
        ),
    )


def span_attributes(session_id: str, end: TaskEnd) -> dict[str, Any]:
    resources = end.resources
    attributes: dict[str, Any] = {
        "session_id": session_id,
        "task_id": end.uid,
        "backend": end.backend,
        "kind": end.kind,
        "task_type": _task_type(end.kind, end.program),
        "executable": _executable(end.program, end.function),
        "status": STATUS[end.state],
        "resources.ranks": resources.ranks,
        "resources.cores_per_rank": resources.cores_per_rank,
        "resources.gpus_per_rank": resources.gpus_per_rank,
        "run_seconds": end.run if end.run is not None else 0.0,
    }
    if end.started is not None:
        attributes["started_at"] = end.started
        attributes["queue_wait_seconds"] = end.wait
    else:
        attributes["incomplete_lifecycle"] = True
    if end.exit_code is not None:
        attributes["exit_code"] = end.exit_code
    if end.error_type is not None:
        attributes["error_type"] = end.error_type
    if end.worker is not None:
        attributes["worker"] = end.worker
    return attributes


def transition_fields(
    session_id: str, backend: str, task: Any, state: str, emit_time: float, end: TaskEnd | None = None
) -> tuple[type[BaseEvent], dict[str, Any]]:
    """The event class and fields of one hook-observed transition, dated when
    it happened (the checkpoint writes the fields without building the event);
    ``end``: the task's `TaskEnd`, for an end."""
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
    if end is not None:
        fields["duration_seconds"] = end.run if end.run is not None else 0.0
        if end.started is None:
            attributes["incomplete_lifecycle"] = True
        if end.error_type is not None:
            fields["error_type"] = attributes["error_type"] = end.error_type
        if end.exit_code is not None:
            attributes["exit_code"] = end.exit_code
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
