"""RHAPSODY: one async API for executables, Python functions and multi-rank jobs
on whichever execution engine a site has."""

from rhapsody._version import __version__
from rhapsody.backends import get_backend
from rhapsody.errors import (
    BackendError,
    BackendNotFoundError,
    PluginError,
    ResourceError,
    RhapsodyError,
    TaskCanceledError,
    TaskExecutionError,
    TaskTimeoutError,
    TaskValidationError,
)
from rhapsody.hookspecs import hookimpl
from rhapsody.log import enable_logging
from rhapsody.plugins import BackendRecord, discover_backends
from rhapsody.resources import Resources
from rhapsody.session import Session
from rhapsody.states import TaskState
from rhapsody.task import AITask, BaseTask, ComputeTask

__all__ = [
    "AITask",
    "BackendError",
    "BackendNotFoundError",
    "BackendRecord",
    "BaseTask",
    "ComputeTask",
    "PluginError",
    "ResourceError",
    "Resources",
    "RhapsodyError",
    "Session",
    "TaskCanceledError",
    "TaskExecutionError",
    "TaskState",
    "TaskTimeoutError",
    "TaskValidationError",
    "__version__",
    "discover_backends",
    "enable_logging",
    "get_backend",
    "hookimpl",
]
