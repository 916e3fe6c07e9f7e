"""RHAPSODY backends on the Dragon runtime (``pip install rhapsody-dragon``).

- ``DragonExecutionBackendV3`` (``dragon``, ``dragon_v3``): ``dragon.workflows.batch.Batch``.
- ``DragonExecutionBackendV2`` (``dragon_v2``): a persistent pool of Dragon worker processes.
- ``DragonExecutionBackendV1`` (``dragon_v1``): one native Dragon process per task.

Importing this package does not import Dragon; the classes load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DragonExecutionBackend", "DragonExecutionBackendV1", "DragonExecutionBackendV2", "DragonExecutionBackendV3"]

_WHERE = {
    "DragonExecutionBackendV3": "rhapsody_dragon.v3",
    "DragonExecutionBackend": "rhapsody_dragon.v3",
    "DragonExecutionBackendV2": "rhapsody_dragon.v2",
    "DragonExecutionBackendV1": "rhapsody_dragon.v1",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rhapsody_dragon' has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(_WHERE[name]), name)
