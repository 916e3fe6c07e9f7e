"""Every exception RHAPSODY raises on purpose derives from `RhapsodyError`."""

from __future__ import annotations

import asyncio
import sys
from typing import Any


class RhapsodyError(Exception):
    """Base class of RHAPSODY's own errors."""

    @property
    def message(self) -> str:
        """The error's text (rhapsody-py's name for it)."""
        return str(self)


class TaskValidationError(RhapsodyError, ValueError):
    """A task description is malformed; raised when the task is built.

    ``TaskValidationError(uid, field, problem)``; rhapsody-py's two-argument
    form ``TaskValidationError(uid, message)`` names no field."""

    def __init__(self, uid: str | None, field: str, problem: str | None = None) -> None:
        if problem is None:
            field, problem = "<task>", field
        self.uid, self.field, self.problem = uid, field, problem
        super().__init__(f"task {uid or '<unnamed>'}: field {field!r}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uid, self.field, self.problem))

    @property
    def task_uid(self) -> str | None:
        return self.uid


class TaskExecutionError(RhapsodyError):
    """An executable task exited non-zero (or a backend reported a failure without
    an exception of its own)."""

    def __init__(self, uid: str, message: str, exit_code: int | None = None, stderr: str | None = None) -> None:
        self.uid, self.exit_code, self.stderr = uid, exit_code, stderr
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uid, str(self), self.exit_code, self.stderr))

    @property
    def task_uid(self) -> str:
        """rhapsody-py's name for ``uid``."""
        return self.uid


class TaskTimeoutError(RhapsodyError, TimeoutError):
    """A task ran longer than its ``timeout``; it was cancelled and marked FAILED."""

    def __init__(self, uid: str, timeout: float) -> None:
        self.uid, self.timeout = uid, timeout
        super().__init__(f"task {uid} exceeded its timeout of {timeout:g} s and was stopped")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uid, self.timeout))


class TaskCanceledError(RhapsodyError):
    """Raised by ``await task`` for a task that was cancelled."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        super().__init__(f"task {uid} was canceled")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uid,))


class ResourceError(RhapsodyError):
    """A task asks for more than its backend can ever give it.

    ``ResourceError(message)``, or rhapsody-py's ``ResourceError(task_uid,
    resource_type, message)``."""

    def __init__(self, *args: Any) -> None:
        self.task_uid: str | None = None
        self.resource_type: str | None = None
        if len(args) == 3:
            self.task_uid, self.resource_type, text = args
            where = f"task {self.task_uid}: " if self.task_uid else ""
            args = (f"{where}{self.resource_type}: {text}",)
        super().__init__(*args)


class BackendError(RhapsodyError):
    """The engine behind a backend failed (not one task's own fault).

    ``BackendError(message)``, or rhapsody-py's ``BackendError(backend_name, message)``."""

    def __init__(self, *args: Any) -> None:
        self.backend_name: str | None = None
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            self.backend_name = args[0]
            args = (f"backend {args[0]!r} failed: {args[1]}",)
        super().__init__(*args)


class WorkerLostError(BackendError):
    """The worker, process or pilot running a task died under it: not the
    task's own fault, so a task with ``retries`` left is run again. Engines
    report it through ``TaskHandle.lost`` (or ``failed(WorkerLostError(...))``)."""


class JournalError(RhapsodyError):
    """A journal cannot be opened or written, or a task has no stable identity in it."""


class SessionError(RhapsodyError, RuntimeError):
    """A Session cannot do what was asked (it is closed, ...)."""


class BackendNotFoundError(RhapsodyError, LookupError, ValueError):
    """A backend name or class that no installed plugin provides (a ValueError
    too, as rhapsody-py raises for an unknown backend name)."""


# rhapsody-py raises asyncio.TimeoutError, which is TimeoutError only from Python 3.11 on
if sys.version_info >= (3, 11):

    class WaitTimeoutError(RhapsodyError, TimeoutError):
        """``Session.wait_tasks`` ran out of time (the tasks keep running)."""

else:  # pragma: no cover - Python 3.10

    class WaitTimeoutError(RhapsodyError, asyncio.TimeoutError, TimeoutError):
        """``Session.wait_tasks`` ran out of time (the tasks keep running)."""


class PluginError(RhapsodyError):
    """A backend plugin is broken or conflicts with another one."""


class IllegalStateTransition(RhapsodyError):
    """A task was moved along an edge the state machine does not have: a bug."""

    def __init__(self, uid: str, old: Any, new: Any) -> None:
        self.uid, self.old, self.new = uid, old, new
        super().__init__(f"task {uid}: illegal state transition {old} -> {new}")
