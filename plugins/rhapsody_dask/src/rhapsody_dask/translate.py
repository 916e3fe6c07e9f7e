"""The translation table: one RHAPSODY task -> one ``Client.submit`` call.

- a function becomes ``worker.run_function(topic, key, payload)``, the call
  packed once here (`rhapsody.engine.calls.pack_call`), so an argument that
  cannot be pickled fails its own task with a message naming the task and the
  argument, before Dask sees it;
- an executable becomes ``worker.run_executable(topic, key, spec)``, its
  `LaunchSpec` (resolved by core) run in the worker;
- the key is ``<function or program name>-<unique>``: the scheduler groups
  tasks by the part before the first dash (one group per task makes it
  quadratic), and the rest is unique per submission, never derived from the
  task uid (a uid may repeat; Dask would hand back the earlier task's result);
- `Resources` become Dask worker resources ``CPU`` / ``GPU`` / ``MEMORY`` when
  the workers advertise them; ``task_backend_specific_kwargs`` pass on.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from rhapsody.engine.calls import pack_call
from rhapsody.engine.handle import TaskHandle
from rhapsody.errors import ResourceError, TaskValidationError
from rhapsody.task import ComputeTask
from rhapsody_dask import worker
from rhapsody_dask.workers import WorkerView

#: ``task_backend_specific_kwargs`` keys handed on to ``Client.submit`` as they are
PASSED_ON = frozenset({"priority", "workers", "allow_other_workers", "fifo_timeout"})
#: every key this backend understands: ``resources`` (merged over the mapping of
#: `Resources`), ``retries`` (reruns after an exception or a lost worker), ``key``
#: (the name the task is grouped under; a unique part is always added)
ACCEPTED_KEYS = PASSED_ON | {"resources", "retries", "key"}


@attrs.define(eq=False)
class Submission:
    """One task in Dask: what was submitted, under which key, and what the
    backend learnt about it since."""

    handle: TaskHandle | None
    name: str  # the key's group part
    wrapper: Callable[..., Any]  # a function of `rhapsody_dask.worker`
    payload: Any  # packed call (bytes) or LaunchSpec
    options: dict[str, Any]
    retries: int  # reruns left after an exception or a lost worker
    key: str = ""
    requeues: int = 0  # resubmissions after losing a worker it had not started on
    worker: str | None = None  # where it runs, from its RUNNING event
    future: Any = None

    @property
    def is_executable(self) -> bool:
        return self.wrapper is worker.run_executable


class Translator:
    """Builds `Submission`s for one backend: its RUNNING topic, its key
    source, and the worker resources its cluster advertises."""

    def __init__(self, topic: str, view: WorkerView) -> None:
        self.topic, self.view = topic, view
        self._token = uuid.uuid4().hex[:12]  # unique to this backend: two clients of one scheduler never share a key
        self._count = itertools.count()

    def translate(self, handle: TaskHandle) -> Submission:
        """Raises `TaskValidationError` / `ResourceError` / `TypeError` (an
        unpicklable call) for a task that cannot go to Dask."""
        task = handle.task
        assert isinstance(task, ComputeTask)
        extra = task.task_backend_specific_kwargs
        retries = extra.get("retries") or 0
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise TaskValidationError(task.uid, "task_backend_specific_kwargs['retries']", f"must be an int >= 0, got {retries!r}")
        options = {k: extra[k] for k in PASSED_ON & extra.keys()}
        resources = self._dask_resources(task)
        if resources:
            options["resources"] = resources
        name = extra.get("key")
        if name is not None and not isinstance(name, str):
            raise TaskValidationError(task.uid, "task_backend_specific_kwargs['key']", f"must be a string, got {type(name).__name__}")
        if handle.launch is not None:
            spec = copy.copy(handle.launch)  # the worker's command table is keyed by the Dask key: spec.uid becomes it
            program = spec.program
            if program != spec.argv[0]:  # a command line: name it by its first word
                program = (program.split() or ["sh"])[0]
            return Submission(handle, _name_part(name or os.path.basename(program)), worker.run_executable, spec, options, retries)
        if task.resources.ranks > 1:
            raise TaskValidationError(task.uid, "resources.ranks", "a function task runs as one call; several ranks need an executable")
        fn = task.function
        assert fn is not None  # a ComputeTask without an executable has a function
        payload = pack_call(fn, task.args, task.kwargs, uid=task.uid)
        label = name or getattr(fn, "__name__", None) or type(fn).__name__
        return Submission(handle, _name_part(label), worker.run_function, payload, options, retries)

    def arguments(self, sub: Submission) -> tuple[Any, ...]:
        """Give ``sub`` a fresh key (each submission, resubmissions too) and
        return the wrapper's arguments."""
        sub.key = f"{sub.name}-{self._token}{next(self._count):x}"
        if sub.is_executable:
            sub.payload.uid = sub.key
        return (self.topic, sub.key, sub.payload)

    def _dask_resources(self, task: ComputeTask) -> dict[str, Any] | None:
        advertised = self.view.advertised
        req: dict[str, Any] = {}
        if "CPU" in advertised:
            req["CPU"] = task.resources.cores
        if "GPU" in advertised and task.resources.gpus:
            req["GPU"] = task.resources.gpus
        if "MEMORY" in advertised and task.resources.memory:
            req["MEMORY"] = task.resources.memory
        user = task.task_backend_specific_kwargs.get("resources")
        if user is not None and not isinstance(user, dict):
            raise TaskValidationError(task.uid, "task_backend_specific_kwargs['resources']", f"must be a dict, got {type(user).__name__}")
        req.update(user or {})
        missing = sorted(r for r in req if r not in advertised)
        if missing and self.view.count:
            raise ResourceError(
                f"task {task.uid} asks for Dask worker resource(s) {', '.join(missing)}, which no worker advertises "
                f"(advertised: {', '.join(sorted(advertised)) or 'none'})"
            )
        return req or None


def _name_part(text: str) -> str:
    """A key prefix Dask groups by: letters, digits and underscores, starting
    with a letter (no dash: the scheduler splits the key at the first dash)."""
    text = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "task"
    return text if text[0].isalpha() else f"task_{text}"
