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
from rhapsody.task import _ONE_CORE, AITask, BaseTask, ComputeTask, generated_uid
from rhapsody.task_lists import peek

_SCALARS = (type(None), bool, int, float, str)
_function_names: dict[Any, str] = {}  # function -> "module:qualname", once per function


def _canon(value: Any, where: str, uid: str, strict: bool) -> str:
    """A text that is equal for equal values, in every run of any process."""
    kind = type(value)
    if kind in _SCALARS:
        return repr(value) if kind is not str else "s" + repr(value)  # "s": the str '1' is not the int 1
    if kind is tuple or kind is list:
        return ("(" if kind is tuple else "[") + ",".join([_canon(v, where, uid, strict) for v in value]) + ")]"[kind is list]
    if kind is dict:
        items = sorted([(_canon(k, where, uid, strict), _canon(v, where, uid, strict)) for k, v in value.items()])
        return "{" + ",".join([f"{k}:{v}" for k, v in items]) + "}"
    if kind is bytes:
        return f"b:{value.hex()}"
    if isinstance(value, PurePath):
        return f"path:{os.fspath(value)!r}"
    if kind in (set, frozenset):
        return "set{" + ",".join(sorted([_canon(v, where, uid, strict) for v in value])) + "}"
    if not strict:  # a task with a uid of its own: the text is only for reading
        return f"<{kind.__name__}>{value!r}"
    raise JournalError(
        f"task {uid}: {where} holds a {kind.__name__}, which has no stable identity across runs; "
        "give the task a uid= of its own to journal it"
    )


def _function_name(task: ComputeTask, strict: bool) -> str:
    fn = task.function
    try:
        return _function_names[fn]
    except (KeyError, TypeError):  # TypeError: an unhashable callable object
        pass
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:  # a lambda, a closure, a partial, a callable object
        if not strict:
            return f"<callable>{fn!r}"
        raise JournalError(
            f"task {task.uid}: its function {fn!r} has no import name (a lambda, closure or callable object), so it has "
            "no stable identity across runs; define it at module level or give the task a uid= of its own"
        )
    name = _function_names[fn] = f"{module}:{qualname}"
    return name


def describe(task: BaseTask, strict: bool = True) -> str:
    """The canonical text of ``task``'s description: its digest is of this
    text, and the journal keeps it. Fields at their defaults are left out.
    ``strict=False`` (a task with a uid): values without a stable text are
    shown by ``repr`` instead of refused."""
    uid = task.uid
    parts = [task.kind]
    if isinstance(task, ComputeTask):
        if task.function is not None:
            parts.append(f"function={_function_name(task, strict)}")
            if task.args:
                parts.append("args=" + _canon(task.args, "args", uid, strict))
            if task.kwargs:
                parts.append("kwargs=" + _canon(task.kwargs, "kwargs", uid, strict))
        else:
            parts.append(f"executable={task.executable!r}")
            if task.arguments:
                parts.append("arguments=" + _canon(task.arguments, "arguments", uid, strict))
        for name in ("input_files", "output_files"):
            files = peek(task, name)
            if files:
                parts.append(f"{name}=" + _canon([os.fspath(p) for p in files], name, uid, strict))
        if task.capture_stdio:
            parts.append("capture_stdio=True")
    elif isinstance(task, AITask):
        for name in (
            "prompt",
            "model",
            "inference_endpoint",
            "system_prompt",
            "temperature",
            "max_tokens",
            "top_p",
            "top_k",
            "stop_sequences",
        ):
            value = getattr(task, name)
            if value is not None:
                parts.append(f"{name}=" + _canon(value, name, uid, strict))
    if task.backend is not None:
        parts.append(f"backend={task.backend!r}")
    if task.timeout is not None:
        parts.append(f"timeout={task.timeout!r}")
    if task.retries is not None:
        parts.append(f"retries={task.retries!r}")
    if task.retry_on:
        parts.append("retry_on=" + ",".join(f"{t.__module__}:{t.__qualname__}" for t in task.retry_on))
    if task.resources is not _ONE_CORE:
        parts.append(f"resources={task.resources!r}")
    if task.task_backend_specific_kwargs:
        parts.append("backend_kwargs=" + _canon(task.task_backend_specific_kwargs, "task_backend_specific_kwargs", uid, strict))
    if task.metadata:
        parts.append("metadata=" + _canon(task.metadata, "metadata", uid, strict))
    extras = task._extras()  # keywords beyond the fields (ComputeTask(..., name="x"))
    if extras:
        parts.append("extra=" + _canon(extras, "extra fields", uid, strict))
    return "\n".join(parts)


class Identities:
    """Gives each task of one run its journal key, in submission order."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def keys(self, tasks: list[BaseTask]) -> list[tuple[str, str]]:
        """``(key, description)`` per task; raises `JournalError` for a task
        without a stable identity, and then counts none of the batch (a batch
        refused, then submitted again without the bad task, numbers its
        duplicates as if the refused one had never been tried)."""
        described: list[tuple[str, str | None, str]] = []  # (uid key or None, digest, text)
        for task in tasks:
            if not generated_uid(task.uid):
                described.append((f"uid:{task.uid}", None, describe(task, strict=False)))
                continue
            text = describe(task)
            described.append(("", hashlib.sha256(text.encode("utf-8")).hexdigest()[:32], text))
        seen = self._seen
        keys = []
        for key, digest, text in described:
            if digest is not None:
                n = seen[digest]
                seen[digest] = n + 1
                key = f"sha256:{digest}#{n}"
            keys.append((key, text))
        return keys
