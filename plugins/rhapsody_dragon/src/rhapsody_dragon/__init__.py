"""RHAPSODY backends on the Dragon runtime (``pip install rhapsody-dragon``).

- ``DragonBatchExecutionBackend`` (``dragon``, ``dragon_v3``; also ``DragonExecutionBackend``,
  ``DragonExecutionBackendV3``): ``dragon.workflows.batch.Batch``.
- ``DragonPoolExecutionBackend`` (``dragon_v2``; also ``DragonExecutionBackendV2``): a
  persistent pool of Dragon worker processes.
- ``DragonProcessExecutionBackend`` (``dragon_v1``; also ``DragonExecutionBackendV1``): one
  native Dragon process (group) per task.

Importing this package does not import Dragon; the classes load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DragonBatchExecutionBackend": "rhapsody_dragon.batch",
    "DragonExecutionBackendV3": "rhapsody_dragon.batch",
    "DragonExecutionBackend": "rhapsody_dragon.batch",
    "DragonPoolExecutionBackend": "rhapsody_dragon.pool",
    "DragonExecutionBackendV2": "rhapsody_dragon.pool",
    "DragonProcessExecutionBackend": "rhapsody_dragon.processes",
    "DragonExecutionBackendV1": "rhapsody_dragon.processes",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rhapsody_dragon' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
