"""What core decides about a task before its engine sees it: whether this
backend can ever run it, and, for an executable, exactly how to launch it."""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection
from pathlib import Path

from rhapsody.engine.launch import LaunchSpec
from rhapsody.errors import BackendError, ResourceError, TaskValidationError
from rhapsody.resources import Capacity, Resources
from rhapsody.task import LAUNCH_KEYS, BaseTask, ComputeTask

SHELL = "/bin/sh"


def rejection(
    task: BaseTask, backend: str, kinds: Collection[str], capacity: Capacity | None, accepted: Collection[str]
) -> Exception | None:
    """Why ``backend`` can never run ``task``, or None."""
    if task.kind not in kinds:
        return BackendError(f"backend {backend!r} cannot run {task.kind} tasks (it runs: {', '.join(sorted(kinds))})")
    if task.task_backend_specific_kwargs:
        unknown = _unknown_key(task, accepted)
        if unknown is not None:
            return unknown
    why = _exceeds(task.resources, capacity)
    if why is not None:
        return ResourceError(f"task {task.uid} can never run on backend {backend!r}: it {why}")
    return None


# Most tasks of a batch share one Resources object (the default, or the one a
# caller reuses) and the capacity is asked once per batch: the last answer is
# kept by identity (both are frozen). Only the event loop calls this.
_last_fit: tuple[object, object, str | None] = (None, None, None)


def _exceeds(resources: Resources, capacity: Capacity | None) -> str | None:
    global _last_fit
    last_resources, last_capacity, why = _last_fit
    if resources is last_resources and capacity is last_capacity:
        return why
    why = resources.exceeds(capacity)
    _last_fit = (resources, capacity, why)
    return why


def _unknown_key(task: BaseTask, accepted: Collection[str]) -> TaskValidationError | None:
    keys = task.task_backend_specific_kwargs
    if not keys:
        return None
    is_executable = isinstance(task, ComputeTask) and task.executable is not None
    allowed = set(accepted) | (LAUNCH_KEYS if is_executable else set())
    for key in keys:
        if key in allowed:
            continue
        if key in LAUNCH_KEYS:
            return TaskValidationError(task.uid, f"task_backend_specific_kwargs[{key!r}]", "applies to executables only")
        close = difflib.get_close_matches(str(key), sorted(allowed | LAUNCH_KEYS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(allowed)) or "none"
        return TaskValidationError(
            task.uid, f"task_backend_specific_kwargs[{key!r}]", f"unknown to this backend{hint} (it accepts: {known})"
        )
    return None


def argv_of(task: ComputeTask) -> list[str]:
    """The one shell rule. ``shell`` in ``task_backend_specific_kwargs`` decides
    when given; otherwise an executable with no ``arguments`` that contains
    white space is a command line for ``/bin/sh`` (radical.asyncflow sends
    these), unless it names an existing file (a program path with a space)."""
    exe = task.executable or ""
    shell = task.task_backend_specific_kwargs.get("shell")
    if shell is None:
        shell = not task.arguments and any(c.isspace() for c in exe.strip()) and not os.path.isfile(exe)
    if shell:
        return [SHELL, "-c", " ".join([exe, *task.arguments])]
    return [exe, *task.arguments]


def launch_spec(task: ComputeTask, work_dir: Path) -> LaunchSpec:
    """Resolve an executable task once; raises `TaskValidationError` for a
    malformed ``cwd`` / ``env``."""
    kw = task.task_backend_specific_kwargs
    env = kw.get("env") or {}
    if not isinstance(env, dict):
        raise TaskValidationError(task.uid, "task_backend_specific_kwargs['env']", f"must be a dict, got {type(env).__name__}")
    cwd = kw.get("cwd")
    if cwd is not None and not isinstance(cwd, (str, os.PathLike)):
        raise TaskValidationError(task.uid, "task_backend_specific_kwargs['cwd']", f"must be a path, got {type(cwd).__name__}")
    out = err = None
    if task.capture_stdio:
        work_dir.mkdir(parents=True, exist_ok=True)
        out, err = str(work_dir / f"{task.uid}.stdout"), str(work_dir / f"{task.uid}.stderr")
    return LaunchSpec(
        task.uid,
        argv_of(task),
        env={str(k): str(v) for k, v in env.items()} if env else None,
        cwd=os.fspath(cwd) if cwd is not None else None,
        stdout_path=out,
        stderr_path=err,
        ranks=task.resources.ranks,
        timeout=task.timeout,
    )
