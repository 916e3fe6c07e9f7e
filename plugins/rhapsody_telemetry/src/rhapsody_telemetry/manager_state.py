"""What a `TelemetryManager` holds: its settings, the OTel providers and
instruments it sets up at start, the queues the pump drains, the ledger of
counts; the helpers every part of it shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from rhapsody.log import get_logger
from rhapsody_telemetry import tasks as taskinfo
from rhapsody_telemetry.checkpoint import CheckpointWriter
from rhapsody_telemetry.events import BaseEvent
from rhapsody_telemetry.instruments import Instruments
from rhapsody_telemetry.ledger import Ledger
from rhapsody_telemetry.observer import TransitionTap
from rhapsody_telemetry.sampling import ResourcePoller
from rhapsody_telemetry.spans import RecentSpans, TaskSpanMaker

DEFAULT_MAX_SPANS = 10_000

log = get_logger("rhapsody.telemetry")


def ns(seconds: float) -> int:
    return int(seconds * 1e9)


class ManagerState:
    """The fields of a `TelemetryManager` (see there for the arguments)."""

    # set up by `TelemetryManager.start`
    _recent: RecentSpans
    _tracer_provider: Any
    _meter_provider: Any
    _metric_reader: Any
    _instruments: Instruments
    _session_span: Any
    _spans: TaskSpanMaker
    _pump_task: asyncio.Task[None]

    def __init__(
        self,
        session_id: str,
        checkpoint_interval: float | None = None,
        checkpoint_path: str | None = None,
        span_processors: list[Any] | None = None,
        metric_readers: list[Any] | None = None,
        resource: Any = None,
        *,
        max_spans: int = DEFAULT_MAX_SPANS,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError(f"session_id must be a non-empty string, got {session_id!r}")
        if checkpoint_interval is not None and not checkpoint_interval > 0:
            raise ValueError(f"checkpoint_interval must be > 0 seconds or None, got {checkpoint_interval!r}")
        if not isinstance(max_spans, int) or max_spans < 1:
            raise ValueError(f"max_spans must be an int >= 1, got {max_spans!r}")
        self._session_id = session_id
        self._checkpoint_interval = checkpoint_interval
        self._checkpoint_dir = checkpoint_path
        self._extra_processors = list(span_processors or [])
        self._extra_readers = list(metric_readers or [])
        self._resource = resource
        self._max_spans = max_spans
        self._ledger = Ledger()
        self._tap = TransitionTap()
        self._tap.capture_context = active_context
        self._tap_name = f"rhapsody-telemetry:{session_id}:{id(self):x}"
        self._emitted: list[tuple[BaseEvent, Any]] = []
        self._times: list[taskinfo.TaskTimes | taskinfo.TaskEnd] = []  # of tasks ended since the last drain
        self._flights: dict[str, taskinfo.Flight] = {}
        self._subscribers: list[Callable[[BaseEvent], Any]] = []
        self._enrichers: list[Callable[[BaseEvent], dict[str, Any]]] = []
        self._callbacks: set[asyncio.Task[Any]] = set()
        self._failing: set[Any] = set()
        self._pollers: dict[int, ResourcePoller] = {}
        self._adapters: list[Any] = []
        self._poll_interval = 5.0
        self._running = False
        self._stopped = False
        self._started_at = 0.0
        self._ended_at: float | None = None
        self._checkpoint: CheckpointWriter | None = None
        self._last_metrics: Any = None
        self._tracer: Any = None

    # ------------------------------------------------------------- identity
    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def checkpoint_file(self) -> Path | None:
        """The JSONL checkpoint being written (None without ``checkpoint_path``)."""
        return self._checkpoint.path if self._checkpoint is not None else None


def active_context() -> Any:
    """The OTel context, when a span is active in it (else None: the session span is the parent)."""
    context = otel_context.get_current()
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def counts_dict(counts: Any) -> dict[str, int]:
    return {k: getattr(counts, k) for k in ("submitted", "started", "running", "completed", "failed", "canceled")}
