"""Running totals of one telemetry session: task counts per backend and state,
run-time and queue-wait statistics, the last resource sample of each node.
Constant memory per backend and node, whatever the number of tasks."""

from __future__ import annotations

import math
from typing import Any

import attrs


@attrs.define
class Counts:
    """Tasks of one backend: how many reached each stage, how many run now."""

    submitted: int = 0
    started: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.canceled

    def add_end(self, state: str) -> None:
        """One more task ended ``state`` (DONE, FAILED or CANCELED)."""
        field = ENDED_AS[state]
        setattr(self, field, getattr(self, field) + 1)


@attrs.define
class Stat:
    """Count, sum, min and max of a series of seconds."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = 0.0

    def extend(self, values: list[float]) -> None:
        if values:
            self.count += len(values)
            self.total += sum(values)
            self.low = min(self.low, min(values))
            self.high = max(self.high, max(values))

    def as_dict(self) -> dict[str, float]:
        if not self.count:
            return {}
        return {
            "total_seconds": round(self.total, 6),
            "mean_seconds": round(self.total / self.count, 6),
            "min_seconds": round(self.low, 6),
            "max_seconds": round(self.high, 6),
        }


ENDED_AS = {"DONE": "completed", "FAILED": "failed", "CANCELED": "canceled"}


@attrs.define
class Ledger:
    counts: dict[str, Counts] = attrs.field(factory=dict)
    run_time: Stat = attrs.field(factory=Stat)
    queue_wait: Stat = attrs.field(factory=Stat)
    #: (backend, node_id, gpu_id) -> the latest sample's fields
    resources: dict[tuple[str, str, int | None], dict[str, Any]] = attrs.field(factory=dict)

    def add_times(self, ended: list[Any]) -> None:
        """Run and queue-wait seconds of ended tasks (`TaskTimes`)."""
        self.run_time.extend([t.run for t in ended if t.run is not None])
        self.queue_wait.extend([t.wait for t in ended if t.wait is not None])

    def of(self, backend: str) -> Counts:
        counts = self.counts.get(backend)
        if counts is None:
            counts = self.counts[backend] = Counts()
        return counts

    def totals(self) -> Counts:
        total = Counts()
        for counts in list(self.counts.values()):
            for field in attrs.fields(Counts):
                setattr(total, field.name, getattr(total, field.name) + getattr(counts, field.name))
        return total
