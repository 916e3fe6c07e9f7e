"""Push and pull access to a `TelemetryManager`, as rhapsody-py 0.6 names them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rhapsody_telemetry.events import BaseEvent


class TelemetrySubscriber:
    """Push: ``TelemetrySubscriber(manager).subscribe(callback)`` calls
    ``callback(event)`` (sync or async) for every event."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def subscribe(self, callback: Callable[[BaseEvent], Any]) -> None:
        self._manager.subscribe(callback)


class TelemetryReader:
    """Pull: the OTel metrics and finished spans, spans optionally only those
    of one session or one task."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def read_metrics(self) -> Any:
        return self._manager.read_metrics()

    def read_traces(self, session_id: str | None = None, task_id: str | None = None) -> tuple[Any, ...]:
        spans = self._manager.read_traces()
        if session_id is not None:
            spans = tuple(s for s in spans if (s.attributes or {}).get("session_id") == session_id)
        if task_id is not None:
            spans = tuple(s for s in spans if (s.attributes or {}).get("task_id") == task_id)
        return tuple(spans)
