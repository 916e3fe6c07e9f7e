"""radical.asyncflow 0.6's WorkflowEngine.start_telemetry() and workflow_scope()
against this project's telemetry, driving the real concurrent backend."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from radical.asyncflow import WorkflowEngine

from rhapsody_concurrent.backend import ConcurrentExecutionBackend


def test_asyncflow_start_telemetry_and_workflow_scope(work_dir: Path) -> None:
    events: list[Any] = []

    async def go() -> Any:
        backend = await ConcurrentExecutionBackend(name="local", cores=2)
        flow = await WorkflowEngine.create(backend=backend, work_dir=str(work_dir))
        try:
            telemetry = await flow.start_telemetry(resource_poll_interval=0.2)
            telemetry.subscribe(events.append)

            @flow.function_task
            async def double(x: int) -> int:
                return 2 * x

            @flow.function_task
            async def plus_one(x: int) -> int:
                return x + 1

            async with flow.workflow_scope("wf-test") as workflow_id:
                assert workflow_id == "wf-test"
                result = await plus_one(double(20))
            assert result == 41
            outside = await double(1)
            assert outside == 2
            await telemetry.stop()
            return telemetry
        finally:
            await flow.shutdown()

    telemetry = asyncio.run(go())
    counts = telemetry.task_count()
    assert (counts["submitted"], counts["completed"], counts["running"]) == (3, 3, 0)
    spans = telemetry.read_traces()
    (session_span,) = [s for s in spans if s.name == "session"]
    (workflow,) = [s for s in spans if s.name == "workflow"]
    assert workflow.attributes["asyncflow.workflow_id"] == "wf-test"
    assert workflow.parent.span_id == session_span.context.span_id
    tasks = [s for s in spans if s.name == "task"]
    inside = [s for s in tasks if s.attributes.get("asyncflow.workflow_id") == "wf-test"]
    assert len(inside) == 2 and len(tasks) == 3
    for span in inside:
        assert span.parent.span_id == workflow.context.span_id
        assert span.attributes["status"] == "completed" and span.attributes["task_type"] == "function"
    (lone,) = [s for s in tasks if s not in inside]
    assert lone.parent.span_id == session_span.context.span_id
    kinds = [e.event_type for e in events]
    assert kinds.count("asyncflow.TaskResolved") == 3 and kinds.count("TaskCreated") == 3
    assert kinds.count("TaskCompleted") == 3 and "ResourceUpdate" in kinds
