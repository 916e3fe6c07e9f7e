"""A telemetry checkpoint read back as what the report draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from rhapsody_telemetry.checkpoint import read_checkpoint


@attrs.frozen
class TaskRow:
    uid: str
    backend: str
    status: str  # completed | failed | canceled
    submitted: float
    started: float | None
    ended: float
    error_type: str | None = None
    worker: str | None = None  # where the engine said it ran; None: it did not say


@attrs.frozen
class Sample:
    time: float
    backend: str
    node: str
    gpu: int | None
    cpu: float | None
    memory: float | None
    gpu_percent: float | None


@attrs.define
class Run:
    session_id: str = "?"
    started: float | None = None
    ended: float | None = None
    tasks: list[TaskRow] = attrs.field(factory=list)
    samples: list[Sample] = attrs.field(factory=list)
    last_counts: dict[str, dict[str, int]] = attrs.field(factory=dict)
    complete: bool = False  # SessionEnded was written: the run is over

    @property
    def t0(self) -> float:
        times = [self.started] if self.started is not None else []
        times += [t.submitted for t in self.tasks] + [s.time for s in self.samples]
        return min(times) if times else 0.0

    @property
    def t1(self) -> float:
        times = [self.ended] if self.ended is not None else []
        times += [t.ended for t in self.tasks] + [s.time for s in self.samples]
        return max(times) if times else self.t0


def load_run(path: str | Path) -> Run:
    run = Run()
    for record in read_checkpoint(path):
        section = record["section"]
        if section == "session":
            run.session_id, run.started = str(record.get("session_id", "?")), record.get("started")
        elif section == "span" and record.get("name") == "task":
            run.tasks.append(_task(record))
        elif section == "event":
            _event(run, record)
        elif section == "metric":
            run.last_counts = dict(record.get("backends") or {})
    return run


def _task(record: dict[str, Any]) -> TaskRow:
    attributes = record.get("attributes") or {}
    return TaskRow(
        uid=str(attributes.get("task_id", "?")),
        backend=str(attributes.get("backend", "?")),
        status=str(attributes.get("status", "?")),
        submitted=float(record["start_time_s"]),
        started=attributes.get("started_at"),
        ended=float(record["end_time_s"]),
        error_type=attributes.get("error_type"),
        worker=attributes.get("worker"),
    )


def _event(run: Run, record: dict[str, Any]) -> None:
    kind = record.get("event_type")
    if kind == "ResourceUpdate":
        run.samples.append(
            Sample(
                time=float(record["event_time"]),
                backend=str(record.get("backend")),
                node=str(record.get("node_id")),
                gpu=record.get("gpu_id"),
                cpu=record.get("cpu_percent"),
                memory=record.get("memory_percent"),
                gpu_percent=record.get("gpu_percent"),
            )
        )
    elif kind == "SessionEnded":
        run.ended, run.complete = float(record["event_time"]), True
    elif kind == "SessionStarted" and run.started is None:
        run.started = float(record["event_time"])
