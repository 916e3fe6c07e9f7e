"""RHAPSODY backend plugin for Dask distributed.

Importing this package is cheap: ``DaskExecutionBackend`` (and with it
``dask.distributed``) loads on first access.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DaskConfigurationError", "DaskExecutionBackend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rhapsody_dask import backend  # noqa: PLC0415

        return getattr(backend, name)
    raise AttributeError(f"module 'rhapsody_dask' has no attribute {name!r}")
