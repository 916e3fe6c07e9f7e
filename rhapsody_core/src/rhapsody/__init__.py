"""RHAPSODY: one async API for executables, Python functions and multi-rank jobs
on whichever execution engine a site has.

Names are loaded on first use, so that engine workers importing only
`rhapsody.engine` helpers do not pay for the whole package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rhapsody._version import __version__

_EXPORTS = {
    "AITask": "rhapsody.task",
    "Backend": "rhapsody.execution.backend",
    "BackendError": "rhapsody.errors",
    "BackendNotFoundError": "rhapsody.errors",
    "BackendRecord": "rhapsody.registry.records",
    "BaseTask": "rhapsody.task",
    "Capacity": "rhapsody.resources",
    "ComputeTask": "rhapsody.task",
    "PluginError": "rhapsody.errors",
    "ResourceError": "rhapsody.errors",
    "Resources": "rhapsody.resources",
    "RhapsodyError": "rhapsody.errors",
    "Session": "rhapsody.session",
    "TaskCanceledError": "rhapsody.errors",
    "TaskExecutionError": "rhapsody.errors",
    "TaskState": "rhapsody.states",
    "TaskTimeoutError": "rhapsody.errors",
    "TaskValidationError": "rhapsody.errors",
    "discover_backends": "rhapsody.registry.manager",
    "enable_logging": "rhapsody.log",
    "get_backend": "rhapsody.backends",
    "hookimpl": "rhapsody.hookspecs",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
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
    from rhapsody.execution.backend import Backend
    from rhapsody.hookspecs import hookimpl
    from rhapsody.log import enable_logging
    from rhapsody.registry.manager import discover_backends
    from rhapsody.registry.records import BackendRecord
    from rhapsody.resources import Capacity, Resources
    from rhapsody.session import Session
    from rhapsody.states import TaskState
    from rhapsody.task import AITask, BaseTask, ComputeTask


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rhapsody' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__
