"""Task identity across runs: which journal entry a task of this run is.

A task the user gave a ``uid`` is that uid. Any other task (its uid was made
up by RHAPSODY and differs from run to run) is a SHA-256 of its description:
kind, executable and arguments, or the function by import name
(``module:qualname``, ``__main__`` included) and its args / kwargs, plus files,
resources, launch keywords, backend, timeout, retries and metadata. Two tasks
with the same description in one run are told apart by the order they were
submitted in (``<digest>#<n>``).

What breaks it: changing any of those fields (the task is new and runs),
submitting identical tasks in another order (they swap results, which are
equal anyway unless the function reads outside state), or editing a
function's code without renaming it (the old result is reused). What cannot
be hashed is refused with a `JournalError` that says to give a uid: lambdas,
closures and other functions without an import name, and argument values
other than None, bool, int, float, str, bytes, paths and lists, tuples,
dicts and sets of those.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import PurePath
from typing import Any

from rhapsody.errors import JournalError
from rhapsody.task import AITask, BaseTask, ComputeTask, generated_uid

_SCALARS = (type(None), bool, int, float, str)


def _canon(value: Any, where: str, uid: str) -> str:
    """A text that is equal for equal values, in every run of any process."""
    kind = type(value)
    if kind in _SCALARS:
        return f"{kind.__name__}:{value!r}"
    if kind is bytes:
        return f"bytes:{value.hex()}"
    if isinstance(value, PurePath):
        return f"path:{os.fspath(value)!r}"
    if kind in (list, tuple):
        return f"{kind.__name__}[" + ",".join(_canon(v, where, uid) for v in value) + "]"
    if kind in (set, frozenset):
        return "set{" + ",".join(sorted(_canon(v, where, uid) for v in value)) + "}"
    if kind is dict:
        items = sorted((_canon(k, where, uid), _canon(v, where, uid)) for k, v in value.items())
        return "dict{" + ",".join(f"{k}={v}" for k, v in items) + "}"
    raise JournalError(
        f"task {uid}: {where} holds a {kind.__name__}, which has no stable identity across runs; "
        "give the task a uid= of its own to journal it"
    )


def _function_name(task: ComputeTask) -> str:
    fn = task.function
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:  # a lambda, a closure, a partial, a callable object
        raise JournalError(
            f"task {task.uid}: its function {fn!r} has no import name (a lambda, closure or callable object), so it has "
            "no stable identity across runs; define it at module level or give the task a uid= of its own"
        )
    return f"{module}:{qualname}"


def describe(task: BaseTask) -> str:
    """The canonical text of ``task``'s description (what its digest is of)."""
    uid = task.uid
    parts = [
        f"kind={task.kind}",
        f"backend={task.backend!r}",
        f"timeout={task.timeout!r}",
        f"retries={task.retries!r}",
        "retry_on=" + ",".join(f"{t.__module__}:{t.__qualname__}" for t in task.retry_on),
        f"resources={task.resources!r}",
        "backend_kwargs=" + _canon(task.task_backend_specific_kwargs, "task_backend_specific_kwargs", uid),
        "metadata=" + _canon(task.metadata, "metadata", uid),
    ]
    if isinstance(task, ComputeTask):
        if task.function is not None:
            parts.append(f"function={_function_name(task)}")
            parts.append("args=" + _canon(task.args, "args", uid))
            parts.append("kwargs=" + _canon(task.kwargs, "kwargs", uid))
        else:
            parts.append(f"executable={task.executable!r}")
            parts.append("arguments=" + _canon(task.arguments, "arguments", uid))
        parts.append("input_files=" + _canon([os.fspath(p) for p in task.input_files], "input_files", uid))
        parts.append("output_files=" + _canon([os.fspath(p) for p in task.output_files], "output_files", uid))
        parts.append(f"capture_stdio={task.capture_stdio!r}")
    elif isinstance(task, AITask):
        for name in ("prompt", "model", "inference_endpoint", "system_prompt", "temperature", "max_tokens", "top_p", "top_k"):
            parts.append(f"{name}=" + _canon(getattr(task, name), name, uid))
        parts.append("stop_sequences=" + _canon(task.stop_sequences, "stop_sequences", uid))
    extras = task._extras()  # keywords beyond the fields (ComputeTask(..., name="x"))
    if extras:
        parts.append("extra=" + _canon(extras, "extra fields", uid))
    return "\n".join(parts)


class Identities:
    """Gives each task of one run its journal key, in submission order."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def key(self, task: BaseTask) -> str:
        if not generated_uid(task.uid):
            return f"uid:{task.uid}"
        digest = hashlib.sha256(describe(task).encode("utf-8")).hexdigest()[:32]
        n = self._seen[digest]
        self._seen[digest] = n + 1
        return f"sha256:{digest}#{n}"
