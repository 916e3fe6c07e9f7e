"""``from rhapsody.telemetry.manager import TelemetryManager`` (the import
radical.asyncflow makes), forwarded to the ``rhapsody-telemetry`` plugin."""

from __future__ import annotations

from rhapsody.telemetry._plugin import forward

__all__ = ["TelemetryManager"]
forward(__all__, globals())
