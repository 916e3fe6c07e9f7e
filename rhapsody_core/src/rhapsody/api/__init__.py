"""rhapsody-py's import paths (``from rhapsody.api import ComputeTask, Session``),
for programs written against rhapsody-py 0.6. The names are RHAPSODY's own:
``rhapsody.api.X is rhapsody.X``."""

from rhapsody.api.errors import (
    BackendError,
    ResourceError,
    RhapsodyError,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)
from rhapsody.api.session import Session
from rhapsody.api.task import AITask, BaseTask, ComputeTask

__all__ = [
    "AITask",
    "BackendError",
    "BaseTask",
    "ComputeTask",
    "ResourceError",
    "RhapsodyError",
    "Session",
    "SessionError",
    "TaskExecutionError",
    "TaskValidationError",
]
