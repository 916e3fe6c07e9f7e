"""Tasks as rhapsody-py's dict-based tasks look to user code."""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle
from pathlib import Path

import pytest

from rhapsody import AITask, BaseTask, ComputeTask, Session, TaskValidationError
from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.errors import WaitTimeoutError


def test_extra_fields_are_kept_and_readable_every_way() -> None:
    t = ComputeTask(function=print, name="x", priority=3)
    assert t.name == "x" == t["name"] == t.get("name") and "priority" in t
    d = dict(t)
    assert d["name"] == "x" and d["priority"] == 3 and d["uid"] == t.uid and d["state"] == "NEW"
    assert list(t) == list(d) and len(t) == len(d) and dict(t.items()) == d
    t["label"] = "later"
    assert t.label == "later"
    again = pickle.loads(pickle.dumps(ComputeTask(executable="/bin/true", name="p")))
    assert again.name == "p"
    with pytest.raises(AttributeError):
        _ = t.no_such_thing
    with pytest.raises(TypeError, match="backend fills it in"):
        ComputeTask(function=print, exit_code=0)


def test_a_submitted_task_pickles_as_a_snapshot(tmp_path: Path) -> None:
    async def go() -> None:
        async with Session([ConcurrentExecutionBackend(cores=1)], work_dir=tmp_path) as session:
            t = ComputeTask(function=pow, args=(2, 5), tag="kept")
            await session.submit_tasks([t])
            await t
            copy = pickle.loads(pickle.dumps(t))
            assert copy == t and copy.return_value == 32 and copy.state == "DONE" and copy.tag == "kept"
            assert copy.future is None and t.future is not None

    asyncio.run(go())


def test_dict_methods_update_and_setdefault() -> None:
    t = ComputeTask(function=print)
    t.update({"backend": "b", "extra": 1}, more=2)
    assert (t.backend, t.extra, t.more) == ("b", 1, 2)
    assert t.setdefault("extra", 9) == 1 and t.setdefault("fresh", 3) == 3 == t.fresh


def test_from_dict_equality_and_hash_by_uid() -> None:
    t = ComputeTask(executable="/bin/echo", arguments=["a"], uid="same", name="n")
    copy = BaseTask.from_dict(dict(t))
    assert isinstance(copy, ComputeTask) and copy == t and hash(copy) == hash(t) and copy is not t
    assert copy.name == "n" and copy.arguments == ["a"] and copy.state == "NEW"
    assert {t, copy, ComputeTask(executable="/bin/true", uid="other")} == {t, ComputeTask(executable="/bin/true", uid="other")}
    assert isinstance(BaseTask.from_dict({"prompt": "hi", "model": "m"}), AITask)
    with pytest.raises(TaskValidationError):
        BaseTask.from_dict({"uid": "neither"})


def test_validate_checks_fields_changed_by_hand() -> None:
    t = ComputeTask(executable="/bin/echo")
    t.validate()
    t["timeout"] = -1
    with pytest.raises(TaskValidationError, match="timeout"):
        t.validate()


def test_ai_task_prompt_lists_and_backend_routing() -> None:
    assert AITask(prompt=["a", "b"], model="m").prompt == ["a", "b"]
    assert AITask(prompt="a", backend="vllm").backend == "vllm"
    for bad in ({"prompt": [], "model": "m"}, {"prompt": ["a", 1], "model": "m"}, {"prompt": "a"}):
        with pytest.raises(TaskValidationError):
            AITask(**bad)


def test_near_miss_keys_warn_naming_the_field(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rhapsody.task"):
        t = ComputeTask(executable="/bin/echo", argumets=["lost"], shell=True, colour="red")
    text = " ".join(str(r.msg) for r in caplog.records)
    assert "argumets" in text and "arguments" in text, "a typo of a field names the field"
    assert "shell" in text and "task_backend_specific_kwargs" in text
    assert "colour" not in text, "a key resembling no field is kept silently"
    assert t.argumets == ["lost"] and t.arguments == []


def test_wait_tasks_takes_dicts_and_uids_and_times_out_one_way(tmp_path: Path) -> None:
    class Ref:
        def __init__(self, uid: str) -> None:
            self.uid = uid

    async def go() -> None:
        async with Session([ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as session:
            as_dict = {"uid": "d.1", "executable": "/bin/echo", "arguments": ["hi"]}
            slow = ComputeTask(executable="/bin/sleep", arguments=["30"], uid="slow.1")
            await session.submit_tasks([as_dict, slow])
            assert await session.wait_tasks([as_dict]) == [as_dict] and as_dict["state"] == "DONE"
            with pytest.raises(asyncio.TimeoutError) as info:
                await session.wait_tasks([Ref("slow.1")], timeout=0.1)
            assert isinstance(info.value, TimeoutError) and isinstance(info.value, WaitTimeoutError)
            await session.cancel_tasks([slow])
            with pytest.raises(TaskValidationError, match=r"never\.1"):
                await session.wait_tasks([{"uid": "never.1"}])

    asyncio.run(go())


def test_failed_future_raises_without_never_retrieved_noise(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    def boom() -> None:
        raise KeyError("mine")

    async def go() -> None:
        async with Session([ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path) as session:
            futures = await session.submit_tasks([ComputeTask(function=boom), ComputeTask(function=boom)])
            with pytest.raises(KeyError, match="mine"):
                await futures[0]
            await asyncio.wait(futures)

    asyncio.run(go())
    gc.collect()  # an unretrieved exception is reported when its future is collected
    assert "never retrieved" not in capfd.readouterr().err


def test_extra_fields_set_as_attributes_too() -> None:
    t = ComputeTask(function=print)
    t.note = "n"  # type: ignore[attr-defined]
    assert t["note"] == "n" and dict(t)["note"] == "n" and "note" in list(t)


def test_positional_arguments_in_rhapsody_py_order() -> None:
    t = ComputeTask("/bin/echo", None, ["a", "b"])
    assert t.executable == "/bin/echo" and t.arguments == ["a", "b"]
    f = ComputeTask(None, pow, None, (2, 3))
    assert f.function is pow and f.args == (2, 3)
    a = AITask("a prompt", "a-model")
    assert (a.prompt, a.model) == ("a prompt", "a-model")
    with pytest.raises(TypeError, match="both by position and by keyword"):
        ComputeTask("/bin/echo", executable="/bin/true")
    with pytest.raises(TypeError, match="at most"):
        ComputeTask(*range(10))
