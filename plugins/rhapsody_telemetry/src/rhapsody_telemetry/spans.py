"""Task spans, built in one step when a task ends, and where finished spans go.

A task's span is made once its outcome is known, with its real start (the
submission) and end times, and handed to every span processor (RHAPSODY's own
and the caller's exporters) like any SDK span: building it complete costs a
fraction of a live span that is started, mutated and ended.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

SCOPE = InstrumentationScope("rhapsody")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)


class RecentSpans(SpanProcessor):  # type: ignore[misc]  # the SDK is untyped where mypy runs without it
    """The last ``limit`` finished spans, for ``read_traces()``: a long run's
    older spans went to the exporters and the checkpoint, not to memory.
    (A processor, not an exporter behind SimpleSpanProcessor: that one sets
    and resets an OTel context around every span, which costs more than this.)"""

    def __init__(self, limit: int) -> None:
        self.spans: deque[ReadableSpan] = deque(maxlen=limit)

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)

    def shutdown(self) -> None:
        """Kept readable after the session ends."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class TaskSpanMaker:
    """Makes finished task spans, children of the session span (or of the
    span that was active when the task was created or submitted)."""

    def __init__(self, processors: Sequence[SpanProcessor], resource: Any, session_span: Any, record: Any = None) -> None:
        self.processors = list(processors)
        self.record = record  # writes a checkpoint line straight from what the span is made of
        self.resource = resource
        self.root: SpanContext = session_span.get_span_context()

    def parent_of(self, otel_context: Any) -> SpanContext:
        if otel_context is not None:
            parent: SpanContext = trace.get_current_span(otel_context).get_span_context()
            if parent.is_valid:
                return parent
        return self.root

    def emit(
        self, attributes: dict[str, Any], start_ns: int, end_ns: int, failed: str | None, otel_context: Any, events: Sequence[Event] = ()
    ) -> None:
        parent = self.parent_of(otel_context)
        context = SpanContext(parent.trace_id, random.getrandbits(64), False, _SAMPLED)
        span = ReadableSpan(
            "task",
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            events=events,
            kind=SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, failed) if failed is not None else _OK,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=SCOPE,
        )
        for processor in self.processors:
            processor.on_end(span)
        if self.record is not None:
            self.record(
                "span",
                {
                    "name": "task",
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
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
