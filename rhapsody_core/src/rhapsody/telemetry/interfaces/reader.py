"""``rhapsody.telemetry.interfaces.reader``, forwarded to the plugin."""

from __future__ import annotations

from typing import Any

from rhapsody.telemetry._plugin import plugin

_api = plugin()  # raises ModuleNotFoundError naming what to install
TelemetryReader: Any = _api.TelemetryReader

__all__ = ["TelemetryReader"]
