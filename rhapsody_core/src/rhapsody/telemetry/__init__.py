"""RHAPSODY telemetry: OpenTelemetry traces and metrics of a session's tasks,
resource samples, a JSONL checkpoint and a run report.

Provided by the ``rhapsody-telemetry`` distribution (``pip install
rhapsody-telemetry``); this package only forwards its names, so that
``session.start_telemetry()`` and the import paths of rhapsody-py 0.6 work
when it is installed and say what to install when it is not::

    telemetry = await session.start_telemetry(checkpoint_path="telemetry/")
"""

from __future__ import annotations

from typing import Any

from rhapsody.telemetry._plugin import INSTALL_HINT, NAMES, plugin

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    if name in NAMES:
        return getattr(plugin(), name)
    raise AttributeError(f"module 'rhapsody.telemetry' has no attribute {name!r} (telemetry comes from: {INSTALL_HINT})")


def __dir__() -> list[str]:
    return sorted(NAMES)
