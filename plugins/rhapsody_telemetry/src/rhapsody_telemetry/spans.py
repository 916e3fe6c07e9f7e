"""Task spans, built in one step when a task ends, and where finished spans go.

A task's span is made once its outcome is known, with its real start (the
submission) and end times, and handed to every span processor (RHAPSODY's own
and the caller's exporters) like any SDK span: building it complete costs a
fraction of a live span that is started, mutated and ended.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from rhapsody_telemetry.tasks import TaskEnd

SCOPE = InstrumentationScope("rhapsody")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)


class RecentSpans(SpanProcessor):  # type: ignore[misc]  # the SDK is untyped where mypy runs without it
    """The last ``limit`` finished spans, for ``read_traces()``: a long run's
    older spans went to the exporters and the checkpoint, not to memory.
    (A processor, not an exporter behind SimpleSpanProcessor: that one sets
    and resets an OTel context around every span, which costs more than this.)

    A task's span that nobody else receives is kept as its `TaskEnd` and made
    (by ``make``) only if it is read: most never are, and making one costs
    more than everything else telemetry does for a task."""

    def __init__(self, limit: int, make: Callable[[TaskEnd], ReadableSpan]) -> None:
        self.spans: deque[ReadableSpan | TaskEnd] = deque(maxlen=limit)
        self.make = make

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)

    def finished(self) -> tuple[ReadableSpan, ...]:
        make = self.make
        made = [make(span) if type(span) is TaskEnd else span for span in self.spans]
        self.spans = deque(made, maxlen=self.spans.maxlen)
        return tuple(made)

    def shutdown(self) -> None:
        """Kept readable after the session ends."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class TaskSpanMaker:
    """Makes finished task spans, children of the session span (or of the
    span that was active when the task was created or submitted). A span goes
    to the caller's exporters at once; with none, `RecentSpans` keeps the
    task's `TaskEnd` and the span is made if it is read. The checkpoint gets
    its line either way, written from what the span is made of."""

    def __init__(
        self, recent: RecentSpans, exporters: Sequence[SpanProcessor], resource: Any, session_span: Any, record: Any = None
    ) -> None:
        self.recent = recent
        self.exporters = list(exporters)
        self.record = record  # writes a checkpoint line
        self.resource = resource
        self.root: SpanContext = session_span.get_span_context()

    def parent_of(self, otel_context: Any) -> SpanContext:
        if otel_context is not None:
            parent: SpanContext = trace.get_current_span(otel_context).get_span_context()
            if parent.is_valid:
                return parent
        return self.root

    def emit(
        self, attributes: dict[str, Any], start_ns: int, end_ns: int, failed: str | None, otel_context: Any, span_id: int | None = None
    ) -> None:
        """A span made now, for every processor."""
        span = self.make(attributes, start_ns, end_ns, failed, otel_context, span_id)
        self.recent.on_end(span)
        for processor in self.exporters:
            processor.on_end(span)
        if self.record is not None:
            self._line(attributes, span.context.span_id, span.parent, start_ns, end_ns, failed)

    def keep(self, end: TaskEnd, attributes: Callable[[TaskEnd], dict[str, Any]]) -> None:
        """A task's span from what it ended with: made later (if read) when no exporter wants it now."""
        if self.exporters:
            self.emit(attributes(end), end.start_ns, end.end_ns, end.failure, end.context, end.span_id)
            return
        self.recent.spans.append(end)
        if self.record is not None:
            self._line(attributes(end), end.span_id, self.parent_of(end.context), end.start_ns, end.end_ns, end.failure)

    def make(
        self, attributes: dict[str, Any], start_ns: int, end_ns: int, failed: str | None, otel_context: Any, span_id: int | None = None
    ) -> ReadableSpan:
        parent = self.parent_of(otel_context)
        return ReadableSpan(
            "task",
            context=SpanContext(parent.trace_id, span_id or random.getrandbits(64), False, _SAMPLED),
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            kind=SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, failed) if failed is not None else _OK,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=SCOPE,
        )

    def _line(self, attributes: dict[str, Any], span_id: int, parent: SpanContext, start_ns: int, end_ns: int, failed: str | None) -> None:
        self.record(
            "span",
            {
                "name": "task",
                "trace_id": f"{parent.trace_id:032x}",
                "span_id": f"{span_id:016x}",
                "parent_span_id": f"{parent.span_id:016x}",
                "start_time_s": start_ns / 1e9,
                "end_time_s": end_ns / 1e9,
                "duration_ms": round((end_ns - start_ns) / 1e6, 3),
                "status_code": "ERROR" if failed is not None else "UNSET",
                "status_description": failed,
                "attributes": attributes,
                "events": [],
            },
        )


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as one JSON-ready dict (the checkpoint's ``span`` lines)."""
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "name": span.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "start_time_s": start / 1e9,
        "end_time_s": end / 1e9,
        "duration_ms": round((end - start) / 1e6, 3),
        "status_code": span.status.status_code.name,
        "status_description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "time_s": e.timestamp / 1e9, "attributes": dict(e.attributes or {})} for e in span.events],
    }


class SpansToCheckpoint(SpanProcessor):  # type: ignore[misc]
    """Writes every finished span into the checkpoint, once."""

    def __init__(self, write: Any) -> None:
        self.write = write

    def on_end(self, span: ReadableSpan) -> None:
        self.write("span", span_record(span))
