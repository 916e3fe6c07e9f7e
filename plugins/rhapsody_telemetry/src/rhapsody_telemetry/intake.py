"""The pump of a `TelemetryManager`: queued task transitions and emitted
events become counts, spans, checkpoint lines and subscriber calls, a few
times a second on the event loop (and whenever a reading is taken)."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

from rhapsody.states import TaskState
from rhapsody_telemetry import tasks as taskinfo
from rhapsody_telemetry.events import BaseEvent
from rhapsody_telemetry.manager_state import ManagerState, counts_dict, log, ns
from rhapsody_telemetry.observer import Watched, count_end, retried

_NEW, _RUNNING = TaskState.NEW, TaskState.RUNNING

PUMP_INTERVAL = 0.25  # seconds between two rounds of turning queued transitions into telemetry

_TASK_EVENTS = frozenset({"TaskCreated", "TaskSubmitted", "TaskQueued", "TaskStarted", *taskinfo.TERMINAL_EVENTS})


class Intake(ManagerState):
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
                log.error("telemetry.pump_failed", session=self._session_id, error=f"{type(exc).__name__}: {exc}")

    def _drain(self) -> None:
        self._drain_queues()
        if self._times:
            self._ledger.add_times(self._times)
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
            if self._tap.every_transition:
                self._take_transitions(batch)
            else:
                self._take_ends(batch)

    def _take_ends(self, batch: list[tuple[Watched, Any, Any, Any]]) -> None:
        """Only ends were queued (submissions and starts were counted on the spot)."""
        started_at, keep, attributes = self._started_at, self._spans.keep, self._attributes_of
        for (_, counts, name), task, old, new in batch:
            state = new._value_
            count_end(counts, task, old, state, started_at)
            keep(self._end_of(name, task, state), attributes)

    def _take_transitions(self, batch: list[tuple[Watched, Any, Any, Any]]) -> None:
        """Every transition was queued: each becomes an event too."""
        sid, now, checkpoint = self._session_id, time.time(), self._checkpoint
        want_objects = bool(self._subscribers or self._enrichers)
        for (_, counts, name), task, old, new in batch:
            state = new._value_
            end = None
            if state == "SUBMITTED":
                if old is _NEW:
                    counts.submitted += 1
                else:
                    retried(counts, old)
            elif state == "RUNNING":
                counts.started += 1
                counts.running += 1
            else:
                count_end(counts, task, old, state, self._started_at)
                end = self._end_of(name, task, state)
            cls, fields = taskinfo.transition_fields(sid, name, task, state, now, end)
            if checkpoint is not None:
                checkpoint.write("event", {"event_type": cls.event_type, "node_id": None, **fields})
            event = cls(**fields) if want_objects else None
            if end is not None:
                self._span_of(end, event)
            if event is not None:
                self._deliver(event, to_checkpoint=False)

    def _end_of(self, backend: str, task: Any, state: str) -> taskinfo.TaskEnd:
        """What an ended task's span says; its times go to the statistics at the drain's end."""
        contexts = self._tap.contexts
        end = taskinfo.task_end(backend, task, state, contexts.pop(task.uid, None) if contexts else None)
        self._times.append(end)
        return end

    def _span_of(self, end: taskinfo.TaskEnd, event: BaseEvent | None) -> None:
        if event is not None and self._enrichers:
            attributes = self._attributes_of(end)
            attributes.update(self._enrich(event))
            self._spans.emit(attributes, end.start_ns, end.end_ns, end.failure, end.context, end.span_id)
        else:
            self._spans.keep(end, self._attributes_of)

    def _attributes_of(self, end: taskinfo.TaskEnd) -> dict[str, Any]:
        return taskinfo.span_attributes(self._session_id, end)

    def _task_span(self, end: taskinfo.TaskEnd) -> Any:
        """The span of a task whose end `RecentSpans` kept."""
        return self._spans.make(self._attributes_of(end), end.start_ns, end.end_ns, end.failure, end.context, end.span_id)

    def _enrich(self, event: BaseEvent) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for enricher in self._enrichers:
            try:
                extra.update(enricher(event) or {})
            except Exception as exc:  # noqa: BLE001 - a faulty enricher loses its attributes, nothing else
                log.debug("telemetry.enricher_failed", error=f"{type(exc).__name__}: {exc}")
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
            counts.add_end(state)
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
        self._times.append(taskinfo.TaskTimes(attributes["backend"], run, wait))
        self._spans.emit(attributes, ns(flight.first), ns(event.event_time), failed, flight.context)

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
        level = log.debug if (key or callback) in self._failing else log.warning
        self._failing.add(key or callback)
        level("telemetry.subscriber_failed", subscriber=repr(callback)[:200], error=f"{type(exc).__name__}: {exc}")

    def _metric_snapshot(self) -> dict[str, Any]:
        return {"checkpoint_time": time.time(), "backends": {name: counts_dict(c) for name, c in self._ledger.counts.items()}}


def _attribute_ok(value: Any) -> bool:
    """OTel attributes are scalars or lists of them."""
    if isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value)
