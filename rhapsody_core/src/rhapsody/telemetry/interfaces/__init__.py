"""Pull (`TelemetryReader`) and push (`TelemetrySubscriber`) access to telemetry,
forwarded to the ``rhapsody-telemetry`` plugin."""

from __future__ import annotations

from typing import Any

from rhapsody.telemetry._plugin import plugin

_api = plugin()  # raises ModuleNotFoundError naming what to install
TelemetryReader: Any = _api.TelemetryReader
TelemetrySubscriber: Any = _api.TelemetrySubscriber

__all__ = ["TelemetryReader", "TelemetrySubscriber"]
