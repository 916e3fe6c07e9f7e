"""Tasks to and from plain data (dicts / JSON), through one private cattrs Converter.

Functions travel as ``{"import": "module:qualname"}`` when they can be imported
by name (stable, readable, no code in the payload), otherwise as
``{"cloudpickle": <base64>}``. Exceptions travel as their type name, message and
a cloudpickled copy when picklable. Results and arguments that are not JSON
types are cloudpickled too.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
import cloudpickle

from rhapsody.errors import TaskValidationError
from rhapsody.registry.records import load_object
from rhapsody.resources import Resources
from rhapsody.states import TaskState
from rhapsody.task import RESULT_FIELDS, AITask, BaseTask, ComputeTask
from rhapsody.task_lists import peek

_KINDS: dict[str, type[BaseTask]] = {"compute": ComputeTask, "ai": AITask}


def _pickled(obj: Any) -> dict[str, str]:
    return {"cloudpickle": base64.b64encode(cloudpickle.dumps(obj)).decode("ascii")}


def _unpickled(data: dict[str, str]) -> Any:
    return cloudpickle.loads(base64.b64decode(data["cloudpickle"]))


def _function_ref(fn: Callable[..., Any]) -> dict[str, str]:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and module != "__main__" and "<" not in qualname:
        try:
            if _resolve(f"{module}:{qualname}") is fn:
                return {"import": f"{module}:{qualname}"}
        except Exception:  # noqa: BLE001 - anything unimportable falls back to pickling
            pass
    return _pickled(fn)


_resolve = load_object  # "module:qualname" -> the object, as for plugin records


def _json_exact(value: Any) -> bool:
    """True if JSON gives ``value`` back unchanged (no tuples, no non-str keys)."""
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) is list:
        return all(_json_exact(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    """Values JSON carries exactly stay as they are; anything else is cloudpickled."""
    return value if _json_exact(value) else _pickled(value)


plain = _plain  # for the journal: values as JSON-ready data


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and value.keys() == {"cloudpickle"}:
        return _unpickled(value)
    return value


def _exception_to_dict(exc: BaseException) -> dict[str, Any]:
    data: dict[str, Any] = {"type": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": str(exc)}
    with contextlib.suppress(Exception):  # an unpicklable exception still keeps type and text
        data.update(_pickled(exc))
    return data


def _exception_from_dict(data: dict[str, Any]) -> BaseException:
    if "cloudpickle" in data:
        try:
            return _unpickled(data)  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001
            pass
    return RuntimeError(f"{data.get('type')}: {data.get('message')}")


_converter = cattrs.Converter()
_converter.register_unstructure_hook(TaskState, lambda s: s.value)
_converter.register_structure_hook(TaskState, lambda v, _: TaskState(v))
_converter.register_unstructure_hook(Resources, attrs.asdict)
_converter.register_structure_hook(Resources, lambda v, _: Resources(**v))


def task_to_dict(task: BaseTask) -> dict[str, Any]:
    """Everything about a task as plain data (JSON-serialisable)."""
    data: dict[str, Any] = {"kind": task.kind}
    for field in attrs.fields(type(task)):
        name = field.name
        if name.startswith("_"):
            continue
        value = peek(task, name)  # (an untouched list field is not given a list to keep)
        if name == "function":
            data[name] = None if value is None else _function_ref(value)
        elif name == "exception":
            data[name] = None if value is None else _exception_to_dict(value)
        elif name == "attempt_errors":
            data[name] = [_exception_to_dict(e) for e in value]
        elif name == "retry_on":
            data[name] = [f"{t.__module__}:{t.__qualname__}" for t in value]
        elif name in ("args", "return_value", "response"):
            data[name] = [_plain(v) for v in value] if name == "args" else _plain(value)
        elif name == "kwargs":
            data[name] = {k: _plain(v) for k, v in value.items()}
        else:
            data[name] = _converter.unstructure(value)
    return data


def task_from_dict(data: dict[str, Any]) -> BaseTask:
    """Rebuild a task (description and any results) from `task_to_dict` output or from
    a plain task description such as radical.asyncflow sends. Unknown keys go to
    ``metadata`` so nothing a workflow system attached is lost."""
    if not isinstance(data, dict):
        raise TaskValidationError(None, "<task>", f"a task must be a task object or a dict, got {type(data).__name__}")
    kind = data.get("kind") or ("ai" if data.get("prompt") else "compute")
    cls = _KINDS.get(kind)
    if cls is None:
        raise TaskValidationError(data.get("uid"), "kind", f"unknown task kind {kind!r}; known: {sorted(_KINDS)}")
    init_fields = {f.name: f for f in attrs.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    metadata = dict(data.get("metadata") or {})
    items = dict(data)
    if items.get("executable"):
        # radical.asyncflow's executable_task: a function, if any, only produced the
        # command line, and its args / kwargs were that function's
        for key in ("function", "args", "kwargs"):
            value = items.pop(key, None)
            if value:
                metadata[key] = value
    for key, value in items.items():
        if key == "kind" or key in RESULT_FIELDS or key in ("response", "metrics"):
            continue
        if key not in init_fields:
            metadata[key] = value
            continue
        if value is None and init_fields[key].default is not attrs.NOTHING:
            continue
        if key == "function" and isinstance(value, dict):
            value = _resolve(value["import"]) if "import" in value else _unpickled(value)
        elif key == "args":
            value = tuple(_unplain(v) for v in value)
        elif key == "kwargs":
            value = {k: _unplain(v) for k, v in value.items()}
        elif key == "retry_on" and isinstance(value, (list, tuple)):
            value = tuple(_resolve(v) if isinstance(v, str) else v for v in value)
        elif key == "resources" and isinstance(value, dict):
            value = _converter.structure(value, Resources)
        kwargs[key] = value
    kwargs["metadata"] = metadata
    task = cls(**kwargs)
    if "state" in data:
        task.state = TaskState(data["state"])
        for name in ("stdout", "stderr", "exit_code", "timestamps", "attempt", "worker"):
            if data.get(name) is not None:
                setattr(task, name, data[name])
        task.return_value = _unplain(data.get("return_value"))
        if data.get("exception"):
            task.exception = _exception_from_dict(data["exception"])
        task.attempt_errors = [_exception_from_dict(e) for e in data.get("attempt_errors") or ()]
        if isinstance(task, AITask):
            task.response = _unplain(data.get("response"))
            task.metrics = data.get("metrics")
    return task


def result_to_dict(task: BaseTask) -> dict[str, Any]:
    """A task's results only (state, outputs, value, error, timestamps,
    attempts), as plain data: what a journal keeps of an ended task. Fields
    at their defaults (None, the first attempt) are left out: it is written
    once per task."""
    data: dict[str, Any] = {"state": task.state._value_, "timestamps": task.timestamps}
    for name in ("stdout", "stderr", "exit_code", "worker"):
        value = getattr(task, name)
        if value is not None:
            data[name] = value
    if task.return_value is not None:
        data["return_value"] = _plain(task.return_value)
    if task.exception is not None:
        data["exception"] = _exception_to_dict(task.exception)
    if task.attempt != 1:
        data["attempt"] = task.attempt
    if peek(task, "attempt_errors"):
        data["attempt_errors"] = [_exception_to_dict(e) for e in task.attempt_errors]
    if isinstance(task, AITask) and task.response is not None:
        data["response"] = _plain(task.response)
    return data


def result_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The task fields `result_to_dict` output stands for, decoded."""
    fields: dict[str, Any] = {name: data.get(name) for name in ("stdout", "stderr", "exit_code", "worker")}
    fields["return_value"] = _unplain(data.get("return_value"))
    fields["exception"] = _exception_from_dict(data["exception"]) if data.get("exception") else None
    fields["attempt"] = data.get("attempt") or 1
    fields["attempt_errors"] = [_exception_from_dict(e) for e in data.get("attempt_errors") or ()]
    if "response" in data:
        fields["response"] = _unplain(data["response"])
    return fields


def task_to_json(task: BaseTask) -> str:
    return json.dumps(task_to_dict(task))


def task_from_json(text: str) -> BaseTask:
    return task_from_dict(json.loads(text))


__all__ = ["result_fields", "result_to_dict", "task_from_dict", "task_from_json", "task_to_dict", "task_to_json"]
