"""``rhapsody.telemetry.events``: the telemetry event classes, `define_event`
and `make_event`, forwarded to the ``rhapsody-telemetry`` plugin."""

from __future__ import annotations

from rhapsody.telemetry._plugin import forward

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
    "define_event",
    "make_event",
]
forward(__all__, globals())
