"""Finds the telemetry plugin (the ``rhapsody-telemetry`` distribution) through
its entry point. Core holds no telemetry code and never imports OpenTelemetry:
these modules only forward the names user code imports."""

from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType

ENTRY_POINT_GROUP = "rhapsody.telemetry"
ENTRY_POINT_NAME = "telemetry"
INSTALL_HINT = "pip install rhapsody-telemetry"
#: what ``rhapsody.telemetry.events`` forwards (rhapsody-py 0.6's names)
EVENT_NAMES = (
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
)
#: what ``rhapsody.telemetry`` forwards
NAMES = (*EVENT_NAMES, "TelemetryManager", "TelemetryReader", "TelemetrySubscriber")

_loaded: list[ModuleType] = []


def plugin() -> ModuleType:
    """The plugin's API module; raises ModuleNotFoundError saying what to install."""
    if _loaded:
        return _loaded[0]
    found = entry_points(group=ENTRY_POINT_GROUP, name=ENTRY_POINT_NAME)
    if not found:
        raise ModuleNotFoundError(
            f"RHAPSODY telemetry is a separate distribution and it is not installed: {INSTALL_HINT} "
            f"(no entry point {ENTRY_POINT_NAME!r} in group {ENTRY_POINT_GROUP!r})",
            name="rhapsody_telemetry",
        )
    entry_point = next(iter(found))
    try:
        module: ModuleType = entry_point.load()
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"the RHAPSODY telemetry plugin ({entry_point.value}) is installed but does not import: "
            f"{type(exc).__name__}: {exc}; reinstall it: {INSTALL_HINT}",
            name="rhapsody_telemetry",
        ) from exc
    _loaded.append(module)
    return module
