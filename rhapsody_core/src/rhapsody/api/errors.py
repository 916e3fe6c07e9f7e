"""rhapsody-py's ``rhapsody.api.errors``: RHAPSODY's error classes."""

from rhapsody.errors import (
    BackendError,
    ResourceError,
    RhapsodyError,
    SessionError,
    TaskCanceledError,
    TaskExecutionError,
    TaskTimeoutError,
    TaskValidationError,
)

__all__ = [
    "BackendError",
    "ResourceError",
    "RhapsodyError",
    "SessionError",
    "TaskCanceledError",
    "TaskExecutionError",
    "TaskTimeoutError",
    "TaskValidationError",
]
