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
import time
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from rhapsody.registry import get_plugin_manager
from rhapsody_telemetry.checkpoint import CheckpointWriter, checkpoint_file
from rhapsody_telemetry.events import SessionEnded, SessionStarted, make_event
from rhapsody_telemetry.instruments import Instruments
from rhapsody_telemetry.intake import PUMP_INTERVAL
from rhapsody_telemetry.manager_state import DEFAULT_MAX_SPANS, log, ns
from rhapsody_telemetry.readings import Readings
from rhapsody_telemetry.spans import RecentSpans, SpansToCheckpoint, TaskSpanMaker
from rhapsody_telemetry.wiring import Wiring

__all__ = ["DEFAULT_MAX_SPANS", "PUMP_INTERVAL", "STOP_TIMEOUT", "TelemetryManager"]

STOP_TIMEOUT = 30.0  # seconds the exporters get to flush when telemetry stops


class TelemetryManager(Readings, Wiring):
    """Telemetry of one session (rhapsody-py 0.6's API).

    ``checkpoint_path``: a directory for the JSONL checkpoint (None: none),
    flushed every ``checkpoint_interval`` seconds (None: at the end only).
    ``span_processors`` / ``metric_readers``: OTel SDK processors and readers,
    your exporters, added next to RHAPSODY's in-memory ones. ``resource``: the
    OTel Resource (default: ``Resource.create``, which reads
    ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``).
    """

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
        self._recent = RecentSpans(self._max_spans, self._task_span)
        processors: list[Any] = [self._recent, *self._extra_processors]
        self._tracer_provider = TracerProvider(resource=resource)
        for processor in processors:
            self._tracer_provider.add_span_processor(processor)
        if self._checkpoint_dir is not None:
            self._checkpoint = CheckpointWriter(checkpoint_file(self._checkpoint_dir, self._session_id, self._started_at))
            self._checkpoint.write("session", {"session_id": self._session_id, "started": self._started_at, "format": 1})
            # session and workflow spans; task spans write their line themselves (TaskSpanMaker)
            self._tracer_provider.add_span_processor(SpansToCheckpoint(self._checkpoint.write))
            self._tap.every_transition = True  # each is an event line
        self._metric_reader = InMemoryMetricReader()
        self._meter_provider = MeterProvider(metric_readers=[self._metric_reader, *self._extra_readers], resource=resource)
        self._instruments = Instruments(self._meter_provider.get_meter("rhapsody"), self._ledger, self._session_id)
        self._tracer = self._tracer_provider.get_tracer("rhapsody")
        self._session_span = self._tracer.start_span("session", attributes={"session_id": self._session_id, "backend": "rhapsody"})
        record = self._checkpoint.write if self._checkpoint is not None else None
        self._spans = TaskSpanMaker(self._recent, self._extra_processors, resource, self._session_span, record)
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
        log.info("telemetry.started", session=self._session_id, checkpoint=str(self.checkpoint_file or ""))

    async def stop(self) -> None:
        """Record the end, flush everything to the processors, readers and the
        checkpoint, release the providers. Idempotent; readings stay available."""
        if not self._running:
            return
        # Nothing more comes in (no transitions, no samples), then SessionEnded is the last event.
        self._tap.active = False
        self._tap.unwatch_all()
        if get_plugin_manager().get_plugin(self._tap_name) is not None:
            get_plugin_manager().unregister(name=self._tap_name)
        for poller in self._pollers.values():
            await poller.stop()
        for adapter in self._adapters:
            try:
                adapter.stop()
            except Exception as exc:  # noqa: BLE001 - one adapter must not keep the others running
                log.warning("telemetry.adapter_stop_failed", adapter=type(adapter).__name__, error=str(exc))
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
        self._session_span.end(end_time=ns(now))
        if self._callbacks:
            await asyncio.wait(self._callbacks, timeout=STOP_TIMEOUT)
        self._last_metrics = self._metric_reader.get_metrics_data()
        if self._checkpoint is not None:
            self._checkpoint.write("metric", self._metric_snapshot())
        await self._shutdown_providers()
        if self._checkpoint is not None:
            self._checkpoint.close()
        log.info("telemetry.stopped", session=self._session_id, tasks=self._ledger.totals().ended)

    async def _shutdown_providers(self) -> None:
        # Exporters flush over the network here: in a thread, with a deadline, not on the loop.
        def shutdown() -> None:
            self._tracer_provider.shutdown()
            self._meter_provider.shutdown()

        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.to_thread(shutdown), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            log.error("telemetry.exporters_stuck", session=self._session_id, seconds=round(time.monotonic() - t0, 1))
