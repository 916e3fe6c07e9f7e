"""What core's ``rhapsody.telemetry`` forwards to (the ``rhapsody.telemetry``
entry point): the public names, the progress display and the report command."""

from __future__ import annotations

from typing import Any

from rhapsody_telemetry.events import (
    BaseEvent,
    ResourceUpdate,
    SessionEnded,
    SessionStarted,
    TaskCanceled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSubmitted,
    define_event,
    make_event,
)
from rhapsody_telemetry.interfaces import TelemetryReader, TelemetrySubscriber
from rhapsody_telemetry.manager import TelemetryManager

__all__ = [
    "BaseEvent",
    "ResourceUpdate",
    "SessionEnded",
    "SessionStarted",
    "TaskCanceled",
    "TaskCompleted",
    "TaskCreated",
    "TaskFailed",
    "TaskQueued",
    "TaskStarted",
    "TaskSubmitted",
    "TelemetryManager",
    "TelemetryReader",
    "TelemetrySubscriber",
    "define_event",
    "make_event",
    "report_command",
    "start_progress",
]


def start_progress(session: Any) -> Any:
    from rhapsody_telemetry.progress import Progress  # noqa: PLC0415 - only when asked for

    return Progress.for_session(session)


def report_command(checkpoint: str, output: str | None) -> int:
    from rhapsody_telemetry.report.command import run  # noqa: PLC0415 - only `rhapsody report` needs it

    return int(run(checkpoint, output))
