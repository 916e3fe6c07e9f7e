"""The task model: construction-time validation, item access, results."""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from toys import run

from rhapsody import AITask, ComputeTask, Resources, TaskState, TaskValidationError
from rhapsody.testing import tasks as fn


def _rejects(field: str, uid: str = "t-1", cls: type = ComputeTask, **kw: Any) -> TaskValidationError:
    with pytest.raises(TaskValidationError) as info:
        cls(uid=uid, **kw)
    err = info.value
    assert err.field == field, err
    assert err.uid == uid, err
    assert uid in str(err) and repr(field) in str(err)
    return err


# ------------------------------------------------------------------ exactly one
def test_neither_executable_nor_function() -> None:
    err = _rejects("executable/function")
    assert "exactly one" in str(err)


def test_both_executable_and_function() -> None:
    _rejects("executable/function", executable="/bin/true", function=fn.noop)


def test_executable_and_function_tasks_build() -> None:
    exe = ComputeTask(executable="/bin/echo", arguments=["a", 1, 2.5])
    assert not exe.is_function and exe.arguments == ["a", "1", "2.5"]
    func = ComputeTask(function=fn.add, args=[1], kwargs={"b": 2})
    assert func.is_function and func.args == (1,) and func.kwargs == {"b": 2}
    assert exe.state is TaskState.NEW and "NEW" in exe.timestamps
    assert exe.uid != func.uid


# ------------------------------------------------------------------ wrong types
BAD_COMPUTE = [
    ("executable", {"executable": 5}),
    ("executable", {"executable": "   "}),
    ("function", {"function": 42}),
    ("arguments", {"executable": "ls", "arguments": "-l"}),
    ("arguments", {"executable": "ls", "arguments": [object()]}),
    ("arguments", {"function": fn.noop, "arguments": ["x"]}),
    ("args", {"function": fn.noop, "args": 5}),
    ("kwargs", {"function": fn.noop, "kwargs": {1: 2}}),
    ("kwargs", {"function": fn.noop, "kwargs": [("a", 1)]}),
    ("args/kwargs", {"executable": "ls", "args": (1,)}),
    ("input_files", {"executable": "ls", "input_files": [3]}),
    ("output_files", {"executable": "ls", "output_files": "out.txt"}),
    ("capture_stdio", {"executable": "ls", "capture_stdio": "yes"}),
    ("backend", {"executable": "ls", "backend": ""}),
    ("backend", {"executable": "ls", "backend": 3}),
    ("timeout", {"executable": "ls", "timeout": -1}),
    ("timeout", {"executable": "ls", "timeout": 0}),
    ("timeout", {"executable": "ls", "timeout": "5"}),
    ("timeout", {"executable": "ls", "timeout": True}),
    ("task_backend_specific_kwargs", {"executable": "ls", "task_backend_specific_kwargs": ["cwd"]}),
    ("metadata", {"executable": "ls", "metadata": "x"}),
]


@pytest.mark.parametrize(("field", "kw"), BAD_COMPUTE, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_COMPUTE)])
def test_wrong_types_name_task_and_field(field: str, kw: dict[str, Any]) -> None:
    _rejects(field, **kw)


@pytest.mark.parametrize("uid", ["", 5])
def test_bad_uid(uid: Any) -> None:
    with pytest.raises(TaskValidationError) as info:
        ComputeTask(uid=uid, executable="ls")
    assert info.value.field == "uid"


@given(st.one_of(st.floats(max_value=0.0), st.integers(max_value=0), st.just(math.nan)))
def test_non_positive_timeout_rejected(timeout: float) -> None:
    _rejects("timeout", executable="/bin/true", timeout=timeout)


@given(st.one_of(st.floats(min_value=1e-6, allow_nan=False), st.integers(min_value=1)))
def test_positive_timeout_accepted(timeout: float) -> None:
    assert ComputeTask(executable="/bin/true", timeout=timeout).timeout == timeout


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)


@given(
    executable=_text.filter(lambda s: s.strip()),
    arguments=st.lists(st.one_of(_text, st.integers(), st.floats(allow_nan=False, allow_infinity=False)), max_size=5),
    backend=st.one_of(st.none(), _text.filter(bool)),
    capture=st.booleans(),
)
def test_any_valid_executable_description_builds(executable: str, arguments: list[Any], backend: Any, capture: bool) -> None:
    t = ComputeTask(executable=executable, arguments=arguments, backend=backend, capture_stdio=capture)
    assert t.arguments == [a if isinstance(a, str) else str(a) for a in arguments]
    assert all(isinstance(a, str) for a in t.arguments)
    assert t.state is TaskState.NEW and t.backend == backend


@given(st.one_of(st.integers(), st.floats(), st.binary(), st.lists(st.integers(), max_size=2), st.none()))
def test_non_string_executable_rejected(value: Any) -> None:
    if value is None:
        _rejects("executable/function", executable=value)
    else:
        _rejects("executable", executable=value)


# ------------------------------------------------------------------ AITask
@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_rejected(prompt: str) -> None:
    _rejects("prompt", cls=AITask, prompt=prompt, model="m")


BAD_AI = [
    ("prompt", {"prompt": 5, "model": "m"}),
    ("model", {"prompt": "hi"}),
    ("temperature", {"prompt": "hi", "model": "m", "temperature": 2.5}),
    ("temperature", {"prompt": "hi", "model": "m", "temperature": "hot"}),
    ("top_p", {"prompt": "hi", "model": "m", "top_p": 1.5}),
    ("max_tokens", {"prompt": "hi", "model": "m", "max_tokens": 0}),
    ("top_k", {"prompt": "hi", "model": "m", "top_k": True}),
    ("timeout", {"prompt": "hi", "model": "m", "timeout": -3}),
]


@pytest.mark.parametrize(("field", "kw"), BAD_AI, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_AI)])
def test_ai_task_validation(field: str, kw: dict[str, Any]) -> None:
    _rejects(field, cls=AITask, **kw)


@given(st.floats(allow_nan=False))
def test_ai_temperature_range(temperature: float) -> None:
    if 0.0 <= temperature <= 2.0:
        assert AITask(prompt="hi", model="m", temperature=temperature).temperature == temperature
    else:
        _rejects("temperature", cls=AITask, prompt="hi", model="m", temperature=temperature)


def test_ai_task_builds() -> None:
    t = AITask(prompt="hello", inference_endpoint="http://localhost:8000")
    assert t.kind == "ai" and t.response is None and t.state is TaskState.NEW


# ------------------------------------------------------------------ item access
def test_item_access() -> None:
    t = ComputeTask(executable="/bin/echo", arguments=["x"], uid="items")
    assert t["stdout"] is None and t.get("exit_code") is None
    assert t["executable"] == "/bin/echo" and t["uid"] == "items"
    assert t["state"] is TaskState.NEW and t["state"] == "NEW"
    t.stdout = "out"
    assert t["stdout"] == "out" == t.get("stdout")
    assert t.get("no_such_field", 7) == 7
    assert "stdout" in t and "no_such_field" not in t and "_future" not in t
    with pytest.raises(KeyError):
        t["no_such_field"]
    with pytest.raises(KeyError):
        t["_future"]
    t["backend"] = "b"
    assert t.backend == "b"
    t["no_such_field"] = 1  # kept as an extra field, as rhapsody-py keeps any key
    assert t.no_such_field == 1 == t["no_such_field"] and "no_such_field" in dict(t)


def test_result_fields_are_not_constructor_arguments() -> None:
    with pytest.raises(TypeError):
        ComputeTask(executable="ls", stdout="forged")  # type: ignore[call-arg]


def test_awaiting_unsubmitted_task_says_so() -> None:
    t = ComputeTask(executable="/bin/true", uid="never-submitted")

    async def go() -> None:
        await t

    with pytest.raises(RuntimeError, match=r"never-submitted.*not been submitted"):
        run(go())


def test_result_reflects_state() -> None:
    t = ComputeTask(executable="/bin/true", uid="r")
    with pytest.raises(RuntimeError, match="still NEW"):
        t.result()
    t.state = TaskState.DONE
    assert t.result() is t and t.done


# ------------------------------------------------------------------ resources on tasks
def test_resources_from_dict_and_default() -> None:
    assert ComputeTask(executable="ls").resources == Resources()
    assert ComputeTask(executable="ls", resources={"ranks": 2, "cores_per_rank": 3}).resources == Resources(ranks=2, cores_per_rank=3)


@pytest.mark.parametrize(
    ("resources", "field"),
    [({"cores_per_rank": 0}, "resources.cores_per_rank"), ({"bogus": 1}, "resources"), (5, "resources")],
)
def test_bad_resources_rejected(resources: Any, field: str) -> None:
    with pytest.raises(TaskValidationError) as info:
        ComputeTask(uid="res-1", executable="ls", resources=resources)
    assert info.value.field == field


@pytest.mark.parametrize("resources", [{"cores_per_rank": 0}, {"bogus": 1}, 5])
def test_bad_resources_name_the_task(resources: Any) -> None:
    with pytest.raises(TaskValidationError) as info:
        ComputeTask(uid="res-2", executable="ls", resources=resources)
    assert info.value.uid == "res-2" and "res-2" in str(info.value)


# ------------------------------------------------------------------ list fields made on first use
LIST_FIELDS = ("arguments", "input_files", "output_files", "attempt_errors")


@pytest.mark.parametrize("name", LIST_FIELDS)
def test_untouched_list_fields_read_and_grow_as_lists(name: str) -> None:
    task = ComputeTask(function=fn.noop) if name != "arguments" else ComputeTask(executable="/bin/echo")
    assert task[name] == [] and type(getattr(task, name)) is list
    getattr(task, name).append("x")
    getattr(task, name).append("y")
    assert getattr(task, name) == ["x", "y"] and dict(task)[name] == ["x", "y"]
    setattr(task, name, None)  # set as given, never converted (as for every field after construction)
    assert getattr(task, name) is None


def test_given_list_fields_are_kept() -> None:
    inputs: list[str] = []
    task = ComputeTask(executable="/bin/cat", arguments=("a", 2), input_files=inputs, output_files=("out",))
    assert task.arguments == ["a", "2"] and task.input_files is inputs and task.output_files == ("out",)
    assert ComputeTask(executable="/bin/true", arguments=[]).arguments == []
    with pytest.raises(TaskValidationError):
        ComputeTask(function=fn.noop, input_files="not-a-list")


def test_a_built_function_task_is_one_object_for_the_collector() -> None:
    # Empty lists are tracked by the cyclic GC (empty dicts and tuples are not): a task
    # that held four of them made 100,000 tasks in flight spend a third of a run in collections.
    import gc

    tasks = [ComputeTask(function=fn.noop) for _ in range(10)]
    before = len(gc.get_objects())
    tasks += [ComputeTask(function=fn.noop) for _ in range(1000)]
    assert len(gc.get_objects()) - before <= 1000 + 10  # the tasks themselves (and a little slack)


def test_untouched_list_fields_survive_copies() -> None:
    import pickle

    from rhapsody.serialize import task_from_dict, task_to_dict

    task = ComputeTask(function=fn.add, args=(1, 2))
    assert task_to_dict(task)["input_files"] == [] and task_to_dict(task)["attempt_errors"] == []
    copy = pickle.loads(pickle.dumps(task))
    assert copy.input_files == [] and copy.attempt_errors == [] and copy.uid == task.uid
    back = task_from_dict(task_to_dict(task))
    assert task_to_dict(back) == {**task_to_dict(task), "uid": back.uid, "timestamps": back.timestamps}
    back.output_files.append("o")
    assert task_to_dict(back)["output_files"] == ["o"]


@attrs.define(kw_only=True, eq=False, init=False, slots=True)
class _LabelledTask(ComputeTask):
    """A user's task kind: attrs adds a field to ComputeTask's."""

    label: str = "none"
    weight: int = 0


@attrs.define(kw_only=True, eq=False, init=False, slots=False)
class _DictTask(ComputeTask):
    weight: int = 0


class _PlainSubclass(ComputeTask):
    pass


@pytest.mark.parametrize("kind", [_LabelledTask, _DictTask])
def test_a_subclass_keeps_the_fields_it_adds(kind: type[ComputeTask]) -> None:
    t = kind(function=fn.add, args=(1, 2), weight=3)
    assert t.weight == 3 and t["weight"] == 3 and "weight" in list(t.keys())
    again = pickle.loads(pickle.dumps(t))
    assert type(again) is kind and again.weight == 3 and again.args == (1, 2)
    assert copy.copy(t).weight == 3
    assert kind(function=fn.noop).weight == 0


def test_a_subclass_without_attrs_takes_its_parents_fields_and_extras() -> None:
    t = _PlainSubclass(executable="/bin/echo", arguments=["a"], note="kept")
    assert t.arguments == ["a"] and t["note"] == "kept"
    assert pickle.loads(pickle.dumps(t))["note"] == "kept"


_ANY_ARGS = st.one_of(st.none(), st.tuples(st.integers()), st.lists(st.integers(), max_size=2), st.integers(), st.text(max_size=2))
_ANY_KWARGS = st.one_of(
    st.none(), st.dictionaries(st.text(min_size=1, max_size=3), st.integers(), max_size=2), st.just({1: 2}), st.integers()
)


def _built(*positional: Any, **keywords: Any) -> tuple[str, Any]:
    """What building gives: the fields but uid and timestamps, or the field the error names."""
    try:
        task = ComputeTask(*positional, **keywords)
    except TaskValidationError as exc:
        return "error", exc.field
    fields = dict(task)
    assert set(fields.pop("timestamps")) == {"NEW"}
    fields.pop("uid")
    return "task", fields


@given(
    function=st.sampled_from([fn.noop, fn.add, None, "not callable", 3]),
    args=st.one_of(st.just("unset"), _ANY_ARGS),
    kwargs=st.one_of(st.just("unset"), _ANY_KWARGS),
)
def test_a_function_task_built_by_keyword_is_the_task_built_by_position(function: Any, args: Any, kwargs: Any) -> None:
    """``ComputeTask(function=f, args=..., kwargs=...)`` has a quick path of its
    own; the same description given by position takes the general one. Both give
    the same task, or the same error naming the same field."""
    keywords = {"function": function}
    if args != "unset":
        keywords["args"] = args
    if kwargs != "unset":
        keywords["kwargs"] = kwargs
    by_position = (None, function, None, keywords.get("args"), keywords.get("kwargs"))
    assert _built(**keywords) == _built(*by_position)
