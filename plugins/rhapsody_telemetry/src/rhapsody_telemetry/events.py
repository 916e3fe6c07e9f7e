"""Telemetry events: immutable records every telemetry output is made from.

Lifecycle of a task: (TaskCreated) -> TaskSubmitted -> (TaskQueued) ->
TaskStarted -> TaskCompleted | TaskFailed | TaskCanceled. Field names and
constructors match rhapsody-py 0.6, so code written against it (and
radical.asyncflow 0.6) builds and reads them unchanged.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, ClassVar

import attrs

_ID_PREFIX = os.urandom(8).hex()
_ID_SERIAL = itertools.count()


def new_event_id() -> str:
    """32 hex digits, unique: random per process, then a serial (cheaper than a uuid4 per event)."""
    return f"{_ID_PREFIX}{next(_ID_SERIAL):016x}"


@attrs.frozen
class BaseEvent:
    """What every event carries. ``event_time``: when it happened (wall clock,
    ``time.time()``); ``emit_time``: when it was handed to telemetry, so the
    difference is how late it was reported. ``task_id`` / ``node_id``: None
    when the event is not about a task / a node. ``attributes``: free-form
    context (``executable``, ``task_type``, ``error_type``, ...)."""

    event_type: ClassVar[str] = "BaseEvent"

    event_id: str
    event_time: float
    emit_time: float
    session_id: str
    backend: str
    task_id: str | None = None
    node_id: str | None = None
    attributes: dict[str, Any] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ``event_type`` included."""
        return {"event_type": self.event_type, **attrs.asdict(self, recurse=False)}


@attrs.frozen
class SessionStarted(BaseEvent):
    event_type: ClassVar[str] = "SessionStarted"


@attrs.frozen
class SessionEnded(BaseEvent):
    event_type: ClassVar[str] = "SessionEnded"
    duration_seconds: float = 0.0


@attrs.frozen
class TaskCreated(BaseEvent):
    """A task exists but was not submitted yet (a workflow node defined before
    its dependencies resolved). The OTel context active when it is emitted
    becomes the parent of the task's span."""

    event_type: ClassVar[str] = "TaskCreated"


@attrs.frozen
class TaskSubmitted(BaseEvent):
    event_type: ClassVar[str] = "TaskSubmitted"


@attrs.frozen
class TaskQueued(BaseEvent):
    """Optional: the task reached a backend's own queue."""

    event_type: ClassVar[str] = "TaskQueued"


@attrs.frozen
class TaskStarted(BaseEvent):
    event_type: ClassVar[str] = "TaskStarted"


@attrs.frozen
class TaskCompleted(BaseEvent):
    """Ended DONE; ``duration_seconds`` is the run time (0.0 when the start was
    never seen, with ``incomplete_lifecycle`` in the attributes)."""

    event_type: ClassVar[str] = "TaskCompleted"
    duration_seconds: float = 0.0


@attrs.frozen
class TaskFailed(BaseEvent):
    event_type: ClassVar[str] = "TaskFailed"
    duration_seconds: float = 0.0
    error_type: str = "unknown"


@attrs.frozen
class TaskCanceled(BaseEvent):
    event_type: ClassVar[str] = "TaskCanceled"
    duration_seconds: float = 0.0


def _scope(inst: ResourceUpdate) -> str:
    return "per_gpu" if inst.gpu_id is not None else "per_node"


@attrs.frozen
class ResourceUpdate(BaseEvent):
    """One resource sample of one node (``node_id``). ``gpu_id`` unset: the
    whole node (``resource_scope`` "per_node"); set: one GPU ("per_gpu").
    Percentages are point-in-time; ``*_bytes`` moved since the previous sample."""

    event_type: ClassVar[str] = "ResourceUpdate"
    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    gpu_id: int | None = None
    disk_read_bytes: float | None = None
    disk_write_bytes: float | None = None
    net_sent_bytes: float | None = None
    net_recv_bytes: float | None = None
    resource_scope: str = attrs.field(init=False, default=attrs.Factory(_scope, takes_self=True))


#: names a custom event's fields may not take
RESERVED_FIELDS = frozenset([a.name for a in attrs.fields(BaseEvent)] + ["event_type"])
_ZERO: dict[type, Any] = {float: 0.0, int: 0, str: "", bool: False}


def define_event(name: str, **fields: Any) -> type[BaseEvent]:
    """A new event class for a layer above RHAPSODY, without touching it.

    ``name`` must be namespaced (``"asyncflow.TaskResolved"``): it becomes the
    class's ``event_type``. Each keyword is a field: a type (default: its zero
    value, None for other types) or a ``(type, default)`` pair. A field may not
    reuse a `BaseEvent` field name.
    """
    if not isinstance(name, str) or "." not in name:
        raise ValueError(
            f"define_event: event name {name!r} must be namespaced, e.g. 'myapp.{name}', so it cannot collide with another system's"
        )
    clash = RESERVED_FIELDS.intersection(fields)
    if clash:
        raise ValueError(f"define_event: fields {sorted(clash)} are BaseEvent fields; choose other names")
    own: dict[str, Any] = {}
    for field_name, spec in fields.items():
        kind, default = spec if isinstance(spec, tuple) else (spec, _ZERO.get(spec))
        own[field_name] = attrs.field(default=default, type=kind)
    cls = attrs.make_class(name.rsplit(".", 1)[-1], own, bases=(BaseEvent,), frozen=True)
    cls.event_type = name  # type: ignore[attr-defined,misc]
    cls.__qualname__ = name
    return cls


def make_event(cls: type[BaseEvent], *, session_id: str, backend: str, **kwargs: Any) -> BaseEvent:
    """An event of ``cls`` with a fresh ``event_id``; ``event_time`` defaults to
    now and ``emit_time`` is now."""
    now = time.time()
    event_time = kwargs.pop("event_time", now)
    return cls(event_id=new_event_id(), event_time=event_time, emit_time=now, session_id=session_id, backend=backend, **kwargs)
