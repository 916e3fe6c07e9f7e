"""``from rhapsody.telemetry.manager import TelemetryManager`` (the import
radical.asyncflow makes), forwarded to the ``rhapsody-telemetry`` plugin."""

from __future__ import annotations

from typing import Any

from rhapsody.telemetry._plugin import plugin

_api = plugin()  # raises ModuleNotFoundError naming what to install
TelemetryManager: Any = _api.TelemetryManager

__all__ = ["TelemetryManager"]
