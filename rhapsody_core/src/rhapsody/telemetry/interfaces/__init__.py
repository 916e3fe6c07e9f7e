"""Pull (`TelemetryReader`) and push (`TelemetrySubscriber`) access to telemetry,
forwarded to the ``rhapsody-telemetry`` plugin."""

from __future__ import annotations

from rhapsody.telemetry._plugin import forward

__all__ = ["TelemetryReader", "TelemetrySubscriber"]
forward(__all__, globals())
