"""span_scope around a Session's submissions, enrichers, annotations, custom
adapters and the OTLP/JSON file, on the real concurrent backend."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from rhapsody import ComputeTask, Session
from rhapsody.telemetry.events import ResourceUpdate, define_event, make_event
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


class FixedAdapter:
    """A custom source: one ResourceUpdate when started; stop() is recorded."""

    def __init__(self) -> None:
        self._manager: Any = None
        self.stopped = False

    def start(self) -> None:
        self._manager.emit(
            make_event(ResourceUpdate, session_id=self._manager.session_id, backend="lab", node_id="scope-1", cpu_percent=42.0)
        )

    def stop(self) -> None:
        self.stopped = True


def test_scopes_enrichers_annotations_adapters_and_otlp_json(work_dir: Path) -> None:
    adapter = FixedAdapter()
    checked = define_event("lab.Checked", score=float)

    async def go() -> tuple[Any, list[ComputeTask], list[ComputeTask]]:
        session = Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir)
        telemetry = await session.start_telemetry()
        telemetry.register_span_enricher(lambda event: {"lab.run": "r7"} if event.event_type == "TaskCompleted" else {})
        telemetry.register_adapter(adapter)
        with telemetry.span_scope("stage", {"lab.stage": "prepare"}) as stage:
            inside = [ComputeTask(function=int) for _ in range(3)]
            await session.submit_tasks(inside)
            telemetry.annotate_current_span(make_event(checked, session_id=session.uid, backend="lab", score=0.9, attributes={"rows": 10}))
        assert stage.get_span_context().is_valid
        outside = [ComputeTask(function=int)]
        await session.submit_tasks(outside)
        await session.wait_tasks(inside + outside, timeout=120)
        await session.close()
        return telemetry, inside, outside

    telemetry, inside, outside = asyncio.run(go())
    spans = telemetry.read_traces()
    (stage,) = [s for s in spans if s.name == "stage"]
    (session_span,) = [s for s in spans if s.name == "session"]
    assert stage.attributes["lab.stage"] == "prepare" and stage.parent.span_id == session_span.context.span_id
    assert [(e.name, dict(e.attributes)) for e in stage.events] == [("lab.Checked", {"rows": "10"})]
    tasks = {s.attributes["task_id"]: s for s in spans if s.name == "task"}
    assert all(tasks[t.uid].parent.span_id == stage.context.span_id for t in inside)
    assert tasks[outside[0].uid].parent.span_id == session_span.context.span_id
    assert all(s.attributes["lab.run"] == "r7" for s in tasks.values())
    assert adapter.stopped and telemetry.summary()["resources"]["lab/scope-1"]["cpu_percent"] == 42.0

    path = work_dir / "otlp" / "spans.json"
    text = telemetry.export_as_otlp(str(path))
    document = json.loads(path.read_text())
    assert json.loads(text) == document
    exported = [span for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]
    assert len(exported) == len(spans) == 6
    by_name = {span["name"]: span for span in exported}
    assert by_name["stage"]["parentSpanId"] == f"{session_span.context.span_id:016x}"
    task_attrs = {a["key"]: a["value"] for a in next(s for s in exported if s["name"] == "task")["attributes"]}
    assert task_attrs["backend"] == {"stringValue": "local"} and "intValue" in task_attrs["resources.ranks"]
