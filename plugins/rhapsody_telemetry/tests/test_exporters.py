"""Real OTel exporters: the OTLP/HTTP span and metric exporters sending to a
receiver in the test that decodes the protobuf, and the Prometheus reader
scraped over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import prometheus_client
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from rhapsody import ComputeTask, Session
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


def fails() -> None:
    raise RuntimeError("on purpose")


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


def test_otlp_http_exporters_deliver_decodable_protobuf(work_dir: Path, otlp_receiver: Any) -> None:
    async def go() -> list[str]:
        session = Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir)
        telemetry = await session.start_telemetry(
            span_processors=[BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp_receiver.url}/v1/traces", timeout=30))],
            metric_readers=[
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=f"{otlp_receiver.url}/v1/metrics", timeout=30), export_interval_millis=3_600_000
                )
            ],
            resource=Resource.create({"service.name": "telemetry-test"}),
        )
        tasks = [ComputeTask(function=int) for _ in range(4)] + [ComputeTask(function=fails)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=120)
        await session.close()  # flushes the exporters
        assert telemetry.task_count()["failed"] == 1
        return [t.uid for t in tasks]

    uids = asyncio.run(go())
    spans = otlp_receiver.spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (session_span,) = by_name["session"]
    tasks = {_attrs(s)["task_id"]: s for s in by_name["task"]}
    assert set(tasks) == set(uids)
    for span in tasks.values():
        assert span.parent_span_id == session_span.span_id and span.trace_id == session_span.trace_id
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    failed = tasks[uids[-1]]
    assert _attrs(failed)["error_type"] == "RuntimeError" and failed.status.code == 2  # STATUS_CODE_ERROR
    resource = {kv.key: _value(kv.value) for kv in otlp_receiver.traces[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "telemetry-test"

    metrics = {
        m.name: m for request in otlp_receiver.metrics for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert metrics["tasks_completed"].sum.data_points[0].as_int == 4
    assert metrics["tasks_failed"].sum.data_points[0].as_int == 1
    assert metrics["task_duration_seconds"].histogram.data_points[0].count == 5  # every task that ran, failed ones too


def _attrs(span: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in span.attributes}


def test_prometheus_reader_scraped_over_http(work_dir: Path) -> None:
    reader = PrometheusMetricReader()
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1")
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    async def go() -> str:
        session = Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir)
        await session.start_telemetry(metric_readers=[reader], resource_poll_interval=0.2)
        tasks = [ComputeTask(function=int) for _ in range(7)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=120)
        await asyncio.sleep(0.5)
        text = await asyncio.to_thread(_scrape, url)  # while the session is open
        await session.close()
        return text

    try:
        text = asyncio.run(go())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    completed = [line for line in lines if line.startswith("tasks_completed_total{")]
    assert len(completed) == 1 and 'backend="local"' in completed[0] and completed[0].endswith(" 7.0")
    assert any(line.startswith("task_duration_seconds_count{") and line.endswith(" 7.0") for line in lines)
    assert any(line.startswith("node_memory_utilization") for line in lines)


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return str(answer.read().decode())
