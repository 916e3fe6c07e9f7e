"""RHAPSODY: one async API for executables, Python functions and multi-rank jobs
on whichever execution engine a site has.

Names are loaded on first use, so that engine workers importing only
`rhapsody.engine` helpers do not pay for the whole package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rhapsody._version import __version__  # noqa: F401 - listed in __all__ below, built from _EXPORTS

_EXPORTS = {
    "AITask": "rhapsody.task",
    "Backend": "rhapsody.execution.backend",
    "BackendError": "rhapsody.errors",
    "BackendNotFoundError": "rhapsody.errors",
    "BackendRegistry": "rhapsody.registry.by_name",
    "BackendRecord": "rhapsody.registry.records",
    "BaseTask": "rhapsody.task",
    "Capacity": "rhapsody.resources",
    "ComputeTask": "rhapsody.task",
    "PluginError": "rhapsody.errors",
    "ResourceError": "rhapsody.errors",
    "Resources": "rhapsody.resources",
    "RhapsodyError": "rhapsody.errors",
    "Session": "rhapsody.session",
    "SessionError": "rhapsody.errors",
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

if TYPE_CHECKING:  # the same names, for type checkers (re-exported explicitly)
    from rhapsody.backends import get_backend as get_backend
    from rhapsody.errors import (
        BackendError as BackendError,
    )
    from rhapsody.errors import (
        BackendNotFoundError as BackendNotFoundError,
    )
    from rhapsody.errors import (
        PluginError as PluginError,
    )
    from rhapsody.errors import (
        ResourceError as ResourceError,
    )
    from rhapsody.errors import (
        RhapsodyError as RhapsodyError,
    )
    from rhapsody.errors import (
        SessionError as SessionError,
    )
    from rhapsody.errors import (
        TaskCanceledError as TaskCanceledError,
    )
    from rhapsody.errors import (
        TaskExecutionError as TaskExecutionError,
    )
    from rhapsody.errors import (
        TaskTimeoutError as TaskTimeoutError,
    )
    from rhapsody.errors import (
        TaskValidationError as TaskValidationError,
    )
    from rhapsody.execution.backend import Backend as Backend
    from rhapsody.hookspecs import hookimpl as hookimpl
    from rhapsody.log import enable_logging as enable_logging
    from rhapsody.registry.by_name import BackendRegistry as BackendRegistry
    from rhapsody.registry.manager import discover_backends as discover_backends
    from rhapsody.registry.records import BackendRecord as BackendRecord
    from rhapsody.resources import Capacity as Capacity
    from rhapsody.resources import Resources as Resources
    from rhapsody.session import Session as Session
    from rhapsody.states import TaskState as TaskState
    from rhapsody.task import AITask as AITask
    from rhapsody.task import BaseTask as BaseTask
    from rhapsody.task import ComputeTask as ComputeTask


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rhapsody' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__
