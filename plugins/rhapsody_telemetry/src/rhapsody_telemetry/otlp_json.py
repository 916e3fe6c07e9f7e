"""Finished spans as OTLP/JSON (``{"resourceSpans": [...]}``), the file format
Jaeger, Tempo and the OTel collector read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in dict(attributes or {}).items()]


_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}


def _span(span: ReadableSpan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": f"{span.context.trace_id:032x}",
        "spanId": f"{span.context.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,  # OTLP counts from SPAN_KIND_UNSPECIFIED = 0
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": _attributes(span.attributes),
        "events": [{"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attributes(e.attributes)} for e in span.events],
        "status": {
            "code": _STATUS[span.status.status_code.name],
            **({"message": span.status.description} if span.status.description else {}),
        },
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    return out


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    by_resource: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
    for span in spans:
        entry = by_resource.setdefault(id(span.resource), (span.resource, []))
        entry[1].append(_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource.attributes if resource is not None else {})},
                "scopeSpans": [{"scope": {"name": "rhapsody"}, "spans": rendered}],
            }
            for resource, rendered in by_resource.values()
        ]
    }
