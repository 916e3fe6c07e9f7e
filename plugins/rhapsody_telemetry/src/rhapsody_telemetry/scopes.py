"""Events in and out of a `TelemetryManager`, and the spans user code
opens: `emit`, `subscribe`, span enrichers, `span_scope`,
`annotate_current_span` (what radical.asyncflow calls)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from rhapsody_telemetry.events import BaseEvent
from rhapsody_telemetry.manager_state import ManagerState, active_context, ns


class Scopes(ManagerState):
    _take_ends: Callable[[list[Any]], None]  # Intake's

    def emit(self, event: BaseEvent) -> None:
        """Queue an event (cheap, never blocks). The OTel context active now
        is kept for a task's first event: its span becomes the task's parent."""
        if not self._running:
            return
        first = event.event_type in ("TaskCreated", "TaskSubmitted")
        self._emitted.append((event, active_context() if first else None))

    def subscribe(self, callback: Callable[[BaseEvent], Any]) -> None:
        """Call ``callback(event)`` for every event, on the event loop; an async
        callback runs as a task. An exception is logged, never raised. It sees
        what happens from now on."""
        self._events_from_now()
        self._subscribers.append(callback)

    def register_span_enricher(self, func: Callable[[BaseEvent], dict[str, Any]]) -> None:
        """``func(event) -> dict`` of extra attributes for the span of the task
        the event is about (called with its first event)."""
        self._events_from_now()
        self._enrichers.append(func)

    def _events_from_now(self) -> None:
        # Ends queued so far are taken in as they were queued (counted, no
        # events); from now on every transition is queued, to become an event.
        # (Emitted events stay queued: SessionStarted reaches a subscriber added at once.)
        if self._tap.queue and not self._tap.every_transition:
            batch, self._tap.queue = self._tap.queue, []
            self._take_ends(batch)
        self._tap.every_transition = True

    @contextlib.contextmanager
    def span_scope(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
        """A span active for the block: tasks created or submitted inside
        become its children. Its parent: the active span, else the session's.
        Does nothing before `start`."""
        if self._tracer is None or not self._running:
            yield None
            return
        active = trace.get_current_span()
        parent = None if active.get_span_context().is_valid else trace.set_span_in_context(self._session_span)
        span = self._tracer.start_span(name, context=parent, attributes=attributes or {})
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        finally:
            otel_context.detach(token)
            span.end()

    def annotate_current_span(self, event: BaseEvent) -> None:
        """Add ``event`` as a timestamped event of the active span (if any)."""
        if self._tracer is None:
            return
        span = trace.get_current_span()
        if span.get_span_context().is_valid:
            span.add_event(event.event_type, attributes={k: str(v) for k, v in event.attributes.items()}, timestamp=ns(event.event_time))
