"""Every exception RHAPSODY raises on purpose derives from `RhapsodyError`."""

from __future__ import annotations

from typing import Any


class RhapsodyError(Exception):
    """Base class of RHAPSODY's own errors."""


class TaskValidationError(RhapsodyError, ValueError):
    """A task description is malformed; raised when the task is built."""

    def __init__(self, uid: str | None, field: str, problem: str) -> None:
        self.uid, self.field, self.problem = uid, field, problem
        super().__init__(f"task {uid or '<unnamed>'}: field {field!r}: {problem}")


class TaskExecutionError(RhapsodyError):
    """An executable task exited non-zero (or a backend reported a failure without
    an exception of its own)."""

    def __init__(self, uid: str, message: str, exit_code: int | None = None, stderr: str | None = None) -> None:
        self.uid, self.exit_code, self.stderr = uid, exit_code, stderr
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.uid, str(self), self.exit_code, self.stderr))


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
    """A task asks for more than its backend can ever give it."""


class BackendError(RhapsodyError):
    """The engine behind a backend failed (not one task's own fault)."""


class BackendNotFoundError(RhapsodyError, LookupError):
    """A backend name or class that no installed plugin provides."""


class PluginError(RhapsodyError):
    """A backend plugin is broken or conflicts with another one."""


class IllegalStateTransition(RhapsodyError):
    """A task was moved along an edge the state machine does not have: a bug."""

    def __init__(self, uid: str, old: Any, new: Any) -> None:
        self.uid, self.old, self.new = uid, old, new
        super().__init__(f"task {uid}: illegal state transition {old} -> {new}")
