"""``rhapsody.telemetry.interfaces.subscriber``, forwarded to the plugin."""

from __future__ import annotations

from typing import Any

from rhapsody.telemetry._plugin import plugin

_api = plugin()  # raises ModuleNotFoundError naming what to install
TelemetrySubscriber: Any = _api.TelemetrySubscriber

__all__ = ["TelemetrySubscriber"]
