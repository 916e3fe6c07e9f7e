"""`TelemetryManager`: OpenTelemetry traces and metrics of one session.

Two ways in: the task-state hook (a `Session` that called ``start_telemetry``
has its backends watched) and `emit` (events from a layer above, such as
radical.asyncflow's WorkflowEngine, which creates its own manager). Both are
queued and turned into metrics, spans, checkpoint lines and subscriber calls
a few times a second on the event loop, and whenever a reading method is
called, so readings are always current.

Memory stays bounded: the counts are totals, finished spans go to the span
processors (the caller's exporters, the checkpoint) and only the last
``max_spans`` are kept for `read_traces`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from rhapsody.log import get_logger
from rhapsody.registry import get_plugin_manager
from rhapsody_telemetry import tasks as taskinfo
from rhapsody_telemetry.checkpoint import CheckpointWriter, checkpoint_file
from rhapsody_telemetry.events import BaseEvent, SessionEnded, SessionStarted, make_event
from rhapsody_telemetry.instruments import Instruments
from rhapsody_telemetry.ledger import ENDED_AS, Ledger
from rhapsody_telemetry.observer import TransitionTap
from rhapsody_telemetry.otlp_json import otlp_json
from rhapsody_telemetry.sampling import ResourcePoller
from rhapsody_telemetry.spans import RecentSpans, SpansToCheckpoint, TaskSpanMaker

DEFAULT_MAX_SPANS = 10_000
PUMP_INTERVAL = 0.25  # seconds between two rounds of turning queued transitions into telemetry
STOP_TIMEOUT = 30.0  # seconds the exporters get to flush when telemetry stops

_log = get_logger("rhapsody.telemetry")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class TelemetryManager:
    """Telemetry of one session (rhapsody-py 0.6's API).

    ``checkpoint_path``: a directory for the JSONL checkpoint (None: none),
    flushed every ``checkpoint_interval`` seconds (None: at the end only).
    ``span_processors`` / ``metric_readers``: OTel SDK processors and readers,
    your exporters, added next to RHAPSODY's in-memory ones. ``resource``: the
    OTel Resource (default: ``Resource.create``, which reads
    ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``).
    """

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
        self._tap.capture_context = _active_context
        self._tap_name = f"rhapsody-telemetry:{session_id}:{id(self):x}"
        self._emitted: list[tuple[BaseEvent, Any]] = []
        self._times: list[tuple[str, float | None, float | None]] = []  # of tasks ended since the last drain
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

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Set up the OTel providers, open the checkpoint, start the session
        span, resource polling and the background pump. Idempotent."""
        if self._running:
            return
        if self._stopped:
            raise RuntimeError(f"telemetry of session {self._session_id} was stopped; start a new TelemetryManager")
        loop = asyncio.get_running_loop()
        self._started_at = time.time()
        resource = self._resource or Resource.create({"service.name": "rhapsody", "session_id": self._session_id})
        self._recent = RecentSpans(self._max_spans)
        processors: list[Any] = [self._recent, *self._extra_processors]
        self._tracer_provider = TracerProvider(resource=resource)
        for processor in processors:
            self._tracer_provider.add_span_processor(processor)
        if self._checkpoint_dir is not None:
            self._checkpoint = CheckpointWriter(checkpoint_file(self._checkpoint_dir, self._session_id, self._started_at))
            self._checkpoint.write("session", {"session_id": self._session_id, "started": self._started_at, "format": 1})
            # session and workflow spans; task spans write their line themselves (TaskSpanMaker)
            self._tracer_provider.add_span_processor(SpansToCheckpoint(self._checkpoint.write))
        self._metric_reader = InMemoryMetricReader()
        self._meter_provider = MeterProvider(metric_readers=[self._metric_reader, *self._extra_readers], resource=resource)
        self._instruments = Instruments(self._meter_provider.get_meter("rhapsody"), self._ledger, self._session_id)
        self._tracer = self._tracer_provider.get_tracer("rhapsody")
        self._session_span = self._tracer.start_span("session", attributes={"session_id": self._session_id, "backend": "rhapsody"})
        record = self._checkpoint.write if self._checkpoint is not None else None
        self._spans = TaskSpanMaker(processors, resource, self._session_span, record)
        self._running = True
        self._pump_task = loop.create_task(self._pump(), name=f"rhapsody-telemetry-{self._session_id}")
        self._tap.active = True
        if self._tap.watched:
            get_plugin_manager().register(self._tap, name=self._tap_name)
        for poller in self._pollers.values():
            poller.start()
        for adapter in self._adapters:
            adapter.start()
        self.emit(make_event(SessionStarted, session_id=self._session_id, backend="rhapsody", event_time=self._started_at))
        _log.info("telemetry.started", session=self._session_id, checkpoint=str(self.checkpoint_file or ""))

    async def stop(self) -> None:
        """Record the end, flush everything to the processors, readers and the
        checkpoint, release the providers. Idempotent; readings stay available."""
        if not self._running:
            return
        # Nothing more comes in (no transitions, no samples), then SessionEnded is the last event.
        self._tap.active = False
        if get_plugin_manager().get_plugin(self._tap_name) is not None:
            get_plugin_manager().unregister(name=self._tap_name)
        for poller in self._pollers.values():
            await poller.stop()
        for adapter in self._adapters:
            try:
                adapter.stop()
            except Exception as exc:  # noqa: BLE001 - one adapter must not keep the others running
                _log.warning("telemetry.adapter_stop_failed", adapter=type(adapter).__name__, error=str(exc))
        self._pump_task.cancel()
        await asyncio.gather(self._pump_task, return_exceptions=True)
        self._drain()
        now = time.time()
        ended = make_event(
            SessionEnded, session_id=self._session_id, backend="rhapsody", event_time=now, duration_seconds=now - self._started_at
        )
        self.emit(ended)
        self._drain()
        self._running, self._stopped, self._ended_at = False, True, now
        self._session_span.end(end_time=_ns(now))
        if self._callbacks:
            await asyncio.wait(self._callbacks, timeout=STOP_TIMEOUT)
        self._last_metrics = self._metric_reader.get_metrics_data()
        if self._checkpoint is not None:
            self._checkpoint.write("metric", self._metric_snapshot())
        await self._shutdown_providers()
        if self._checkpoint is not None:
            self._checkpoint.close()
        _log.info("telemetry.stopped", session=self._session_id, tasks=self._ledger.totals().ended)

    async def _shutdown_providers(self) -> None:
        # Exporters flush over the network here: in a thread, with a deadline, not on the loop.
        def shutdown() -> None:
            self._tracer_provider.shutdown()
            self._meter_provider.shutdown()

        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.to_thread(shutdown), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            _log.error("telemetry.exporters_stuck", session=self._session_id, seconds=round(time.monotonic() - t0, 1))

    # ------------------------------------------------------------- wiring
    def observe_session(self, session: Any, resource_poll_interval: float = 5.0) -> None:
        """Watch every task of ``session``'s backends (and backends added later)."""
        if not resource_poll_interval > 0:
            raise ValueError(f"resource_poll_interval must be > 0 seconds, got {resource_poll_interval!r}")
        self._poll_interval = resource_poll_interval
        for backend in session.backends.values():
            self.observe_backend(backend)

    def observe_backend(self, backend: Any) -> None:
        self._tap.watched.add(id(backend))
        backend.add_state_observer(self._tap.observe)
        self.attach_backend(backend, session_id=self._session_id, backend_name=backend.name, interval=self._poll_interval)
        if self._running and get_plugin_manager().get_plugin(self._tap_name) is None:
            get_plugin_manager().register(self._tap, name=self._tap_name)

    def attach_backend(
        self, backend: Any, *, session_id: str | None = None, backend_name: str | None = None, interval: float = 5.0
    ) -> None:
        """Poll ``backend``'s resources every ``interval`` seconds. A backend
        whose engine has no sampler reports none; that is not an error. (Its
        tasks are watched by `Session.start_telemetry`; a caller that emits
        its own task events, like radical.asyncflow, attaches only this.)"""
        if id(backend) in self._pollers or not hasattr(backend, "sample_resources"):
            return
        name = str(backend_name or getattr(backend, "name", None) or type(backend).__name__)
        poller = ResourcePoller(backend, name, session_id or self._session_id, interval, self.emit)
        self._pollers[id(backend)] = poller
        if self._running:
            poller.start()

    def register_adapter(self, adapter: Any) -> None:
        """A custom source with ``start()`` / ``stop()`` that calls ``emit``;
        ``adapter._manager`` is set to this manager."""
        adapter._manager = self
        self._adapters.append(adapter)
        if self._running:
            adapter.start()

    # ------------------------------------------------------------- events in and out
    def emit(self, event: BaseEvent) -> None:
        """Queue an event (cheap, never blocks). The OTel context active now
        is kept for a task's first event: its span becomes the task's parent."""
        if not self._running:
            return
        first = event.event_type in ("TaskCreated", "TaskSubmitted")
        self._emitted.append((event, _active_context() if first else None))

    def subscribe(self, callback: Callable[[BaseEvent], Any]) -> None:
        """Call ``callback(event)`` for every event, on the event loop; an async
        callback runs as a task. An exception is logged, never raised."""
        self._subscribers.append(callback)

    def register_span_enricher(self, func: Callable[[BaseEvent], dict[str, Any]]) -> None:
        """``func(event) -> dict`` of extra attributes for the span of the task
        the event is about (called with its first event)."""
        self._enrichers.append(func)

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
            span.add_event(event.event_type, attributes={k: str(v) for k, v in event.attributes.items()}, timestamp=_ns(event.event_time))

    # ------------------------------------------------------------- the pump
    async def _pump(self) -> None:
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(PUMP_INTERVAL)
            try:
                self._drain()
                due = self._checkpoint_interval is not None and time.monotonic() - last_flush >= self._checkpoint_interval
                if self._checkpoint is not None and due:
                    last_flush = time.monotonic()
                    self._checkpoint.write("metric", self._metric_snapshot())
                    self._checkpoint.flush()
            except Exception as exc:  # noqa: BLE001 - telemetry must never stop; say why it missed a beat
                _log.error("telemetry.pump_failed", session=self._session_id, error=f"{type(exc).__name__}: {exc}")

    def _drain(self) -> None:
        self._drain_queues()
        if self._times:
            self._instruments.queue_times(self._times)
            self._times = []

    def _drain_queues(self) -> None:
        # emitted events first: SessionStarted precedes the first transitions
        if self._emitted:
            emitted, self._emitted = self._emitted, []
            for event, context in emitted:
                self._take_event(event, context)
        if self._tap.queue:
            batch, self._tap.queue = self._tap.queue, []
            self._take_transitions(batch)

    def _take_transitions(self, batch: list[tuple[Any, Any, Any, Any]]) -> None:
        ledger, sid, now = self._ledger, self._session_id, time.time()
        want_objects = bool(self._subscribers or self._enrichers)
        checkpoint = self._checkpoint
        for backend, task, old, new in batch:
            name = backend.name
            counts = ledger.of(name)
            state = new._value_
            if state == "SUBMITTED":
                counts.submitted += 1
            elif state == "RUNNING":
                counts.started += 1
                counts.running += 1
            else:
                # a task already running when telemetry started was never counted as running
                if old._value_ == "RUNNING" and task.timestamps.get("RUNNING", 0.0) >= self._started_at:
                    counts.running -= 1
                setattr(counts, ENDED_AS[state], getattr(counts, ENDED_AS[state]) + 1)
            event = None
            if want_objects or checkpoint is not None:
                cls, fields = taskinfo.transition_fields(sid, name, task, state, now)
                if checkpoint is not None:
                    checkpoint.write("event", {"event_type": cls.event_type, "node_id": None, **fields})
                if want_objects:
                    event = cls(**fields)
            if state in ENDED_AS:
                self._task_ended(name, task, state, event)
            if event is not None:
                self._deliver(event, to_checkpoint=False)

    def _task_ended(self, backend: str, task: Any, state: str, event: BaseEvent | None) -> None:
        times = taskinfo.times_of(task, state)
        attributes = taskinfo.span_attributes(self._session_id, backend, task, state, times)
        if event is not None and self._enrichers:
            attributes.update(self._enrich(event))
        context = self._tap.contexts.pop(task.uid, None) if self._tap.contexts else None
        failed = f"{type(task.exception).__name__}: {task.exception}"[:500] if state == "FAILED" else None
        self._record_times(backend, times.run if times.started is not None else None, times.wait)
        self._spans.emit(attributes, _ns(times.submitted), _ns(times.ended), failed, context)

    def _record_times(self, backend: str, run: float | None, wait: float | None) -> None:
        if run is not None:
            self._ledger.run_time.add(run)
        if wait is not None:
            self._ledger.queue_wait.add(wait)
        self._times.append((backend, run, wait))

    def _enrich(self, event: BaseEvent) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for enricher in self._enrichers:
            try:
                extra.update(enricher(event) or {})
            except Exception as exc:  # noqa: BLE001 - a faulty enricher loses its attributes, nothing else
                _log.debug("telemetry.enricher_failed", error=f"{type(exc).__name__}: {exc}")
        return extra

    def _take_event(self, event: BaseEvent, context: Any) -> None:
        kind = event.event_type
        if kind == "ResourceUpdate":
            fields = {k: getattr(event, k) for k in ("cpu_percent", "memory_percent", "gpu_percent")}
            self._ledger.resources[(event.backend, str(event.node_id), getattr(event, "gpu_id", None))] = fields
        elif event.task_id is not None and kind in _TASK_EVENTS:
            self._follow(event, context)
        self._deliver(event)

    def _follow(self, event: BaseEvent, context: Any) -> None:
        """Counts and the span of a task known from emitted events only."""
        uid, kind, at = str(event.task_id), event.event_type, event.event_time
        flight = self._flights.get(uid)
        if flight is None:
            flight = taskinfo.Flight(event.backend, at, context, {**event.attributes, **self._enrich(event)})
            self._flights[uid] = flight
        counts = self._ledger.of(event.backend or flight.backend)
        if kind == "TaskSubmitted":
            counts.submitted += 1
            flight.submitted = at
        elif kind == "TaskStarted":
            counts.started += 1
            counts.running += 1
            flight.started = at
        elif kind in taskinfo.TERMINAL_EVENTS:
            del self._flights[uid]
            state = taskinfo.TERMINAL_EVENTS[kind]
            if flight.started is not None:
                counts.running -= 1
            setattr(counts, ENDED_AS[state], getattr(counts, ENDED_AS[state]) + 1)
            self._flight_ended(uid, flight, event, state)

    def _flight_ended(self, uid: str, flight: taskinfo.Flight, event: BaseEvent, state: str) -> None:
        wait = flight.started - (flight.submitted or flight.first) if flight.started is not None else None
        run = event.event_time - flight.started if flight.started is not None else None
        attributes: dict[str, Any] = {k: v for k, v in flight.attributes.items() if _attribute_ok(v)}
        attributes.update(
            {
                "session_id": self._session_id,
                "task_id": uid,
                "backend": event.backend or flight.backend or "",
                "status": taskinfo.STATUS[state],
            }
        )
        attributes["run_seconds"] = run or 0.0
        if wait is not None:
            attributes["queue_wait_seconds"] = wait
            attributes["started_at"] = flight.started
        failed = None
        if state == "FAILED":
            attributes["error_type"] = failed = str(getattr(event, "error_type", None) or event.attributes.get("error_type", "unknown"))
        self._record_times(attributes["backend"], run, wait)
        self._spans.emit(attributes, _ns(flight.first), _ns(event.event_time), failed, flight.context)

    def _deliver(self, event: BaseEvent, to_checkpoint: bool = True) -> None:
        if to_checkpoint and self._checkpoint is not None:
            self._checkpoint.write("event", event.as_dict())
        for callback in self._subscribers:
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._callbacks.add(task)
                    task.add_done_callback(self._callback_done)
            except Exception as exc:  # noqa: BLE001 - a subscriber must not break telemetry or the others
                self._subscriber_failed(callback, exc)

    def _callback_done(self, task: asyncio.Task[Any]) -> None:
        self._callbacks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._subscriber_failed(task, exc)

    def _subscriber_failed(self, callback: Any, exc: BaseException) -> None:
        # Said once per subscriber at WARNING (a broken one fails on every event), then at DEBUG.
        key = getattr(callback, "get_coro", None) and type(callback)  # async callbacks: once per kind
        level = _log.debug if (key or callback) in self._failing else _log.warning
        self._failing.add(key or callback)
        level("telemetry.subscriber_failed", subscriber=repr(callback)[:200], error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------- readings
    def read_metrics(self) -> Any:
        """The OTel ``MetricsData`` now (after `stop`: as it was at the end)."""
        if not self._running:
            return self._last_metrics
        self._drain()
        return self._metric_reader.get_metrics_data()

    def read_traces(self) -> tuple[Any, ...]:
        """The last ``max_spans`` finished OTel spans (``ReadableSpan``)."""
        if self._running:
            self._drain()
        recent = getattr(self, "_recent", None)
        return tuple(recent.spans) if recent is not None else ()

    def task_count(self) -> dict[str, int]:
        if self._running:
            self._drain()
        totals = self._ledger.totals()
        return {
            "submitted": totals.submitted,
            "started": totals.started,
            "completed": totals.completed,
            "failed": totals.failed,
            "canceled": totals.canceled,
            "running": totals.running,
        }

    def task_spans(self) -> list[dict[str, Any]]:
        """One plain dict per task span in `read_traces`."""
        out = []
        for span in self.read_traces():
            if span.name != "task":
                continue
            attributes = dict(span.attributes or {})
            record = {k: attributes.get(k) for k in ("task_id", "backend", "executable", "task_type", "status")}
            record["duration_seconds"] = round(((span.end_time or 0) - (span.start_time or 0)) / 1e9, 6)
            record["span_id"] = f"{span.context.span_id:016x}"
            record["trace_id"] = f"{span.context.trace_id:032x}"
            for key in ("error_type", "exit_code", "incomplete_lifecycle", "run_seconds", "queue_wait_seconds"):
                if key in attributes:
                    record[key] = attributes[key]
            out.append(record)
        return out

    def session_duration(self) -> float:
        if not self._started_at:
            return 0.0
        return round((self._ended_at or time.time()) - self._started_at, 6)

    def summary(self) -> dict[str, Any]:
        """Counts, run-time and queue-wait statistics of every task of the
        session (not only the spans still kept), counts per backend, and the
        latest resource sample of every node."""
        counts = self.task_count()
        return {
            "session_id": self._session_id,
            "duration_seconds": self.session_duration(),
            "tasks": counts,
            "duration": self._ledger.run_time.as_dict(),
            "queue_wait": self._ledger.queue_wait.as_dict(),
            "backends": {name: _counts_dict(c) for name, c in self._ledger.counts.items()},
            "resources": {
                f"{backend}/{node}" + (f"/gpu{gpu}" if gpu is not None else ""): {
                    "backend": backend,
                    "node_id": node,
                    "gpu_id": gpu,
                    **fields,
                }
                for (backend, node, gpu), fields in self._ledger.resources.items()
            },
        }

    def export_as_otlp(self, path: str | None = None) -> str:
        """The spans of `read_traces` as OTLP/JSON; also written to ``path``."""
        text = json.dumps(otlp_json(self.read_traces()))
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return text

    def _metric_snapshot(self) -> dict[str, Any]:
        return {"checkpoint_time": time.time(), "backends": {name: _counts_dict(c) for name, c in self._ledger.counts.items()}}


_TASK_EVENTS = frozenset({"TaskCreated", "TaskSubmitted", "TaskQueued", "TaskStarted", *taskinfo.TERMINAL_EVENTS})


def _counts_dict(counts: Any) -> dict[str, int]:
    return {k: getattr(counts, k) for k in ("submitted", "started", "running", "completed", "failed", "canceled")}


def _attribute_ok(value: Any) -> bool:
    """OTel attributes are scalars or lists of them."""
    if isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value)


def _active_context() -> Any:
    """The OTel context, when a span is active in it (else None: the session span is the parent)."""
    context = otel_context.get_current()
    return context if trace.get_current_span(context).get_span_context().is_valid else None
