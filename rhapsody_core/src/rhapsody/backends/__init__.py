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

__all__ = ["Backend", "BackendState", "BaseExecutionBackend", "get_backend"]


def get_backend(name: str, /, **kwargs: Any) -> Backend:
    """Build the backend registered under ``name`` (not started: ``await`` it).
    The backend's ``name`` defaults to ``name``."""
    from rhapsody.registry.manager import get_backend_class  # noqa: PLC0415 - discovery on first use

    cls = get_backend_class(name)
    kwargs.setdefault("name", name)
    return cls(**kwargs)  # type: ignore[no-any-return]


def __getattr__(attr: str) -> Any:
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
