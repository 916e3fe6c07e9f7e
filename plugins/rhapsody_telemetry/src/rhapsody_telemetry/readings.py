"""What a `TelemetryManager` answers: metrics, spans, counts, the summary,
an OTLP/JSON export. Each reading drains the queues first, so it is current."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rhapsody_telemetry.intake import Intake
from rhapsody_telemetry.manager_state import counts_dict
from rhapsody_telemetry.otlp_json import otlp_json


class Readings(Intake):
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
        return recent.finished() if recent is not None else ()

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
            for key in ("error_type", "exit_code", "incomplete_lifecycle", "run_seconds", "queue_wait_seconds", "worker"):
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
            "backends": {name: counts_dict(c) for name, c in self._ledger.counts.items()},
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
