"""The public names: events, define_event / make_event, the forwarding
modules of core, and the Session methods, as rhapsody-py 0.6 code uses them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rhapsody_telemetry import events

import rhapsody.telemetry
from rhapsody import Session
from rhapsody.errors import SessionError
from rhapsody.telemetry import events as core_events
from rhapsody.telemetry.manager import TelemetryManager


def test_core_names_are_the_plugins() -> None:
    assert TelemetryManager is rhapsody.telemetry.TelemetryManager
    assert core_events.TaskFailed is events.TaskFailed
    from rhapsody.telemetry.interfaces.reader import TelemetryReader
    from rhapsody.telemetry.interfaces.subscriber import TelemetrySubscriber

    assert {TelemetryReader.__name__, TelemetrySubscriber.__name__} == {"TelemetryReader", "TelemetrySubscriber"}
    for name in rhapsody.telemetry.__all__:
        assert getattr(rhapsody.telemetry, name) is not None
    for name in core_events.__all__:
        assert getattr(core_events, name) is getattr(events, name)
    with pytest.raises(AttributeError, match="no attribute 'TaskExploded'"):
        _ = core_events.TaskExploded


def test_make_event_fills_ids_and_times() -> None:
    one = events.make_event(events.TaskFailed, session_id="s", backend="b", task_id="t", error_type="ValueError", event_time=10.0)
    two = events.make_event(events.TaskFailed, session_id="s", backend="b", task_id="t")
    assert one.event_type == "TaskFailed" and one.error_type == "ValueError"
    assert one.event_time == 10.0 and one.emit_time >= two.event_time - 1
    assert one.event_id != two.event_id and len(one.event_id) == 32
    with pytest.raises(AttributeError):
        one.task_id = "other"  # type: ignore[misc]


def test_resource_update_scope_follows_gpu_id() -> None:
    node = events.make_event(events.ResourceUpdate, session_id="s", backend="b", node_id="n", cpu_percent=3.0)
    gpu = events.make_event(events.ResourceUpdate, session_id="s", backend="b", node_id="n", gpu_id=0, gpu_percent=50.0)
    assert (node.resource_scope, gpu.resource_scope) == ("per_node", "per_gpu")


def test_define_event_makes_a_namespaced_event_class() -> None:
    checked = events.define_event("myapp.DataChecked", score=float, rows=int, label=(str, "none"), extra=list)
    event = events.make_event(checked, session_id="s", backend="app", score=0.5)
    assert isinstance(event, events.BaseEvent)
    assert (event.event_type, event.score, event.rows, event.label, event.extra) == ("myapp.DataChecked", 0.5, 0, "none", None)
    assert event.as_dict()["event_type"] == "myapp.DataChecked"


@pytest.mark.parametrize("bad", [{"name": "Flat"}, {"name": "app.X", "task_id": str}, {"name": "app.X", "event_type": str}])
def test_define_event_refuses_flat_names_and_core_fields(bad: dict[str, object]) -> None:
    name = bad.pop("name")
    with pytest.raises(ValueError, match=r"namespaced|BaseEvent fields"):
        events.define_event(name, **bad)  # type: ignore[arg-type]


def test_manager_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="checkpoint_interval"):
        TelemetryManager("s", checkpoint_interval=0)
    with pytest.raises(ValueError, match="session_id"):
        TelemetryManager("")
    with pytest.raises(ValueError, match="max_spans"):
        TelemetryManager("s", max_spans=0)


def test_session_telemetry_methods(work_dir: Path) -> None:
    async def go() -> None:
        session = Session(backends=["concurrent"], work_dir=work_dir)
        with pytest.raises(RuntimeError, match="start_telemetry"):
            session.get_telemetry()
        with pytest.raises(ValueError, match="resource_poll_interval"):
            await session.start_telemetry(resource_poll_interval=0)
        telemetry = await session.start_telemetry()
        assert session.get_telemetry() is telemetry and telemetry.session_id == session.uid
        with pytest.raises(SessionError, match="already started"):
            await session.start_telemetry()
        await session.close()
        assert telemetry.session_duration() > 0
        with pytest.raises(RuntimeError, match="stopped"):
            await telemetry.start()

    asyncio.run(go())
