"""The OTel metrics of a session. Counts and resource gauges are observed from
the `Ledger` when a reader collects (nothing is recorded per transition);
run time and queue wait are histograms whose values are queued as tasks end
and recorded when a reader collects (see `Instruments.queue_times`).

Names (rhapsody-py's): ``tasks_submitted``, ``tasks_started``,
``tasks_completed``, ``tasks_failed``, ``tasks_canceled`` (counters),
``tasks_running`` (up-down counter), ``task_duration_seconds`` and
``task_queue_wait_seconds`` (histograms), ``node_cpu_utilization``,
``node_memory_utilization``, ``node_gpu_utilization`` (gauges, percent).
Every point carries ``session_id`` and ``backend``; node gauges ``node_id``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from rhapsody_telemetry.ledger import Counts, Ledger

COUNTERS = {
    "tasks_submitted": ("submitted", "Tasks submitted"),
    "tasks_started": ("started", "Tasks that started running"),
    "tasks_completed": ("completed", "Tasks that ended DONE"),
    "tasks_failed": ("failed", "Tasks that ended FAILED"),
    "tasks_canceled": ("canceled", "Tasks that ended CANCELED"),
}
GAUGES = {
    "node_cpu_utilization": ("cpu_percent", "Node CPU utilization, percent"),
    "node_memory_utilization": ("memory_percent", "Node memory utilization, percent"),
    "node_gpu_utilization": ("gpu_percent", "GPU utilization, percent"),
}

#: histogram buckets from a millisecond to a day (the SDK's default ones are for milliseconds)
SECONDS_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0]

MAX_QUEUED_TIMES = 100_000


class Instruments:
    def __init__(self, meter: Any, ledger: Ledger, session_id: str) -> None:
        self.ledger, self.session_id = ledger, session_id
        self._labels: dict[str, dict[str, str]] = {}
        self._times: list[tuple[Any, ...]] = []  # TaskTimes, TaskEnd
        self._times_lock = threading.Lock()  # readers collect from their own threads
        for name, (field, description) in COUNTERS.items():
            meter.create_observable_counter(name, [self._counts(field)], unit="{task}", description=description)
        meter.create_observable_up_down_counter("tasks_running", [self._counts("running")], unit="{task}", description="Tasks running now")
        for name, (field, description) in GAUGES.items():
            meter.create_observable_gauge(name, [self._nodes(field)], unit="%", description=description)
        self.run_time = meter.create_histogram(
            "task_duration_seconds", unit="s", description="Run time of ended tasks", explicit_bucket_boundaries_advisory=SECONDS_BUCKETS
        )
        self.queue_wait = meter.create_histogram(
            "task_queue_wait_seconds",
            unit="s",
            description="Time from submission to start",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )

    def labels(self, backend: str) -> dict[str, str]:
        labels = self._labels.get(backend)
        if labels is None:
            labels = self._labels[backend] = {"session_id": self.session_id, "backend": backend}
        return labels

    def queue_times(self, batch: Sequence[tuple[Any, ...]]) -> None:
        """Queue ``(backend, run seconds, queue-wait seconds, ...)`` of ended tasks.

        Recording into an SDK histogram costs microseconds per value (attribute
        checks, hashing, locks): on the event loop that is the largest part of
        telemetry's cost. The values wait here instead and are recorded when a
        reader collects: the SDK runs observable callbacks (ours flushes this
        queue) before it reads the histograms, so a collection sees them all.
        Past `MAX_QUEUED_TIMES` they are recorded at once, keeping memory bounded.
        """
        with self._times_lock:
            self._times.extend(batch)
            full = len(self._times) >= MAX_QUEUED_TIMES
        if full:
            self.flush_times()

    def flush_times(self) -> None:
        with self._times_lock:
            batch, self._times = self._times, []
        for item in batch:
            backend, run, wait = item[:3]  # a TaskTimes, or a TaskEnd, which starts with one
            labels = self.labels(backend)
            if run is not None:
                self.run_time.record(run, labels)
            if wait is not None:
                self.queue_wait.record(wait, labels)

    def _counts(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if field == "submitted":  # the first callback of a collection: the histograms get their values now
                self.flush_times()
            items: list[tuple[str, Counts]] = list(self.ledger.counts.items())
            return [Observation(getattr(counts, field), self.labels(backend)) for backend, counts in items]

        return observe

    def _nodes(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for (backend, node, gpu), sample in list(self.ledger.resources.items()):
                value = sample.get(field)
                if value is not None:
                    labels = {**self.labels(backend), "node_id": node}
                    if gpu is not None:
                        labels["gpu_id"] = str(gpu)
                    out.append(Observation(value, labels))
            return out

        return observe
