"""Backend classes, resolved by name through the installed plugins.

``from rhapsody.backends import DaskExecutionBackend`` works when the plugin
that provides it is installed, and otherwise says which distribution to install.
"""

from __future__ import annotations

from typing import Any

from rhapsody.backends.base import BackendState, BaseExecutionBackend

__all__ = ["BackendState", "BaseExecutionBackend", "get_backend"]


def get_backend(name: str, /, **kwargs: Any) -> BaseExecutionBackend:
    """Build the backend registered under ``name`` (not started: ``await`` it).
    The backend's ``name`` defaults to ``name``."""
    from rhapsody.plugins.manager import get_backend_class  # noqa: PLC0415

    cls = get_backend_class(name)
    kwargs.setdefault("name", name)
    return cls(**kwargs)  # type: ignore[no-any-return]


def __getattr__(attr: str) -> Any:
    if "Backend" not in attr or attr.startswith("_"):
        raise AttributeError(f"module 'rhapsody.backends' has no attribute {attr!r}")
    from rhapsody.plugins.manager import get_registry  # noqa: PLC0415

    registry = get_registry()
    record = registry.record_for_class(attr)
    if record is None:
        raise ImportError(f"cannot import {attr} from rhapsody.backends: {registry.missing_class(attr)}")
    return record.load()


def __dir__() -> list[str]:
    from rhapsody.plugins.manager import get_registry  # noqa: PLC0415

    names = {r.class_name for r in get_registry().records.values()}
    names.update(a for r in get_registry().records.values() for a in r.aliases)
    return sorted({*__all__, *names})
