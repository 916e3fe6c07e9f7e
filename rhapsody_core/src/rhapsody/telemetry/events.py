"""``rhapsody.telemetry.events``: the telemetry event classes, `define_event`
and `make_event`, forwarded to the ``rhapsody-telemetry`` plugin."""

from __future__ import annotations

from typing import Any

from rhapsody.telemetry._plugin import plugin

_api = plugin()  # raises ModuleNotFoundError naming what to install
BaseEvent: Any = _api.BaseEvent
ResourceUpdate: Any = _api.ResourceUpdate
SessionEnded: Any = _api.SessionEnded
SessionStarted: Any = _api.SessionStarted
TaskCanceled: Any = _api.TaskCanceled
TaskCompleted: Any = _api.TaskCompleted
TaskCreated: Any = _api.TaskCreated
TaskFailed: Any = _api.TaskFailed
TaskQueued: Any = _api.TaskQueued
TaskStarted: Any = _api.TaskStarted
TaskSubmitted: Any = _api.TaskSubmitted
define_event: Any = _api.define_event
make_event: Any = _api.make_event

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
