"""Backend classes by name. None of them lives here: each comes from the plugin
distribution that provides it (``rhapsody-dask`` for ``DaskExecutionBackend``,
...), found through the ``rhapsody.backends`` entry points. ``from
rhapsody.backends import DaskExecutionBackend`` works when that plugin is
installed, and otherwise says which distribution to install.

Every backend class is a `rhapsody.Backend` around the plugin's engine.
"""

from __future__ import annotations

from typing import Any

from rhapsody.execution.backend import Backend, BackendState

#: the name earlier RHAPSODY releases gave the base class of every backend
BaseExecutionBackend = Backend

#: rhapsody-py's name for it
BaseBackend = Backend

__all__ = [
    "Backend",
    "BackendRegistry",
    "BackendState",
    "BaseBackend",
    "BaseExecutionBackend",
    "Session",
    "StateMapper",
    "TasksMainStates",
    "discover_backends",
    "get_backend",
]


def get_backend(name: str, /, *args: Any, **kwargs: Any) -> Backend:
    """Build the backend registered under ``name`` (not started: ``await`` it),
    passing ``args`` / ``kwargs`` to its class. Without positional arguments the
    backend's ``name`` defaults to ``name``."""
    from rhapsody.registry.by_name import BackendRegistry  # noqa: PLC0415 - discovery on first use

    cls = BackendRegistry.get_backend_class(name)
    if not args:
        kwargs.setdefault("name", name)
    return cls(*args, **kwargs)  # type: ignore[no-any-return]


def discover_backends() -> dict[str, bool]:
    """rhapsody-py's answer: every backend name, True when its class imports.
    (``rhapsody.discover_backends()`` gives the installed backends' records.)"""
    from rhapsody.registry.by_name import backend_availability  # noqa: PLC0415

    return backend_availability()


_LAZY = {
    "BackendRegistry": "rhapsody.registry.by_name",
    "Session": "rhapsody.session",
    "StateMapper": "rhapsody.backends.constants",
    "TasksMainStates": "rhapsody.backends.constants",
}


def __getattr__(attr: str) -> Any:
    if attr in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(_LAZY[attr]), attr)
    if "Backend" not in attr or attr.startswith("_"):
        raise AttributeError(f"module 'rhapsody.backends' has no attribute {attr!r}")
    from rhapsody.registry.manager import get_registry  # noqa: PLC0415

    registry = get_registry()
    record = registry.record_for_class(attr)
    if record is None:
        raise ImportError(f"cannot import {attr} from rhapsody.backends: {registry.missing_class(attr)}")
    return record.load()


def __dir__() -> list[str]:
    from rhapsody.registry.manager import get_registry  # noqa: PLC0415

    records = get_registry().records.values()
    names = {r.class_name for r in records} | {a for r in records for a in r.aliases}
    return sorted({*__all__, *names})
