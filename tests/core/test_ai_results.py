"""How an engine reports an AITask's answer: `TaskHandle.answered` fills
``response`` and ``metrics``, dict submitters see them, and they survive
serialisation; users cannot set them."""

from __future__ import annotations

import pytest
from toys import ManualEngine, run

from rhapsody import AITask, Backend, TaskState
from rhapsody.serialize import task_from_dict, task_to_dict


def _ai_backend() -> tuple[Backend, ManualEngine]:
    engine = ManualEngine()
    engine.task_kinds = frozenset({"ai"})  # type: ignore[attr-defined]
    return Backend(engine, "ai-manual"), engine


def test_answered_fills_response_and_metrics() -> None:
    backend, engine = _ai_backend()
    t = AITask(prompt=["a", "b"], model="m")
    desc = {"prompt": "c", "model": "m", "uid": "ai-dict-1"}

    async def go() -> None:
        async with backend:
            (_, adopted) = await backend.submit_tasks([t, desc])
            engine.handles[t.uid].answered(["A", "B"], {"completion_tokens": 2})
            engine.handles[adopted.uid].answered("C", {"completion_tokens": 1})
            assert await t is t
            await adopted

    run(go())
    assert t.state is TaskState.DONE and t.response == ["A", "B"] and t.metrics == {"completion_tokens": 2}
    assert desc["state"] == "DONE" and desc["response"] == "C" and desc["metrics"] == {"completion_tokens": 1}


def test_response_and_metrics_round_trip() -> None:
    t = AITask(prompt="q", model="m")
    t.state, t.response, t.metrics = TaskState.DONE, "answer", {"latency_s": 0.5, "requests": [{"attempts": 1}]}
    back = task_from_dict(task_to_dict(t))
    assert isinstance(back, AITask) and back.response == "answer" and back.metrics == t.metrics


def test_metrics_is_no_constructor_field() -> None:
    with pytest.raises(TypeError, match="metrics"):
        AITask(prompt="q", model="m", metrics={})
