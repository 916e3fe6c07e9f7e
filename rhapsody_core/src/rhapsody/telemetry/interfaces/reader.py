"""``rhapsody.telemetry.interfaces.reader``, forwarded to the plugin."""

from __future__ import annotations

from rhapsody.telemetry._plugin import forward

__all__ = ["TelemetryReader"]
forward(__all__, globals())
