"""``rhapsody.telemetry.interfaces.subscriber``, forwarded to the plugin."""

from __future__ import annotations

from rhapsody.telemetry._plugin import forward

__all__ = ["TelemetrySubscriber"]
forward(__all__, globals())
