"""What core's ``rhapsody.telemetry`` forwards to (the ``rhapsody.telemetry``
entry point): the public names, the progress display and the report command."""

from __future__ import annotations

from typing import Any

from rhapsody.telemetry._plugin import NAMES
from rhapsody_telemetry.events import (  # noqa: F401 - forwarded by core: rhapsody.telemetry._plugin.NAMES
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
from rhapsody_telemetry.interfaces import TelemetryReader, TelemetrySubscriber  # noqa: F401 - forwarded by core
from rhapsody_telemetry.manager import TelemetryManager  # noqa: F401 - forwarded by core

# what core forwards (its one list of the names), and what core's `rhapsody` command calls
__all__ = [*NAMES, "report_command", "start_progress"]


def start_progress(session: Any) -> Any:
    from rhapsody_telemetry.progress import Progress  # noqa: PLC0415 - only when asked for

    return Progress.for_session(session)


def report_command(checkpoint: str, output: str | None) -> int:
    from rhapsody_telemetry.report.command import run  # noqa: PLC0415 - only `rhapsody report` needs it

    return int(run(checkpoint, output))
