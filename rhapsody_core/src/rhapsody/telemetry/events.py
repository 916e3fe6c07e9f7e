"""``rhapsody.telemetry.events``: the telemetry event classes, `define_event`
and `make_event`, forwarded to the ``rhapsody-telemetry`` plugin."""

from __future__ import annotations

from typing import Any

from rhapsody.telemetry._plugin import EVENT_NAMES, plugin

_api = plugin()  # importing this module without the plugin raises ModuleNotFoundError naming what to install

__all__ = sorted(EVENT_NAMES)


def __getattr__(name: str) -> Any:
    if name in EVENT_NAMES:
        return getattr(_api, name)
    raise AttributeError(f"module 'rhapsody.telemetry.events' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(EVENT_NAMES)
