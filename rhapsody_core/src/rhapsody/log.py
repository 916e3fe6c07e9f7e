"""Structured logging.

Library code logs through structlog loggers that feed the standard-library
logger ``rhapsody`` (and its children). Importing RHAPSODY configures nothing:
until `enable_logging` is called (or ``RHAPSODY_LOG_LEVEL`` is set when a
Session starts) debug and info events go nowhere, and the application's own
structlog and logging configuration is never touched.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import structlog

LEVEL_ENV = "RHAPSODY_LOG_LEVEL"
_ROOT = "rhapsody"
_handler: logging.Handler | None = None
_level_listeners: list[Callable[[], None]] = []

_QUIET_KEYS = frozenset({"event", "level", "logger", "timestamp"})


class _Event(dict):  # type: ignore[type-arg]
    """An event on its way to stdlib logging. Rendered by the handler of
    `enable_logging`; where the application configured nothing, Python's
    last-resort handler prints ``str(event)``: one readable line."""

    def __str__(self) -> str:
        rest = " ".join(f"{k}={v}" for k, v in self.items() if k not in _QUIET_KEYS)
        return f"rhapsody: {self.get('event')}" + (f" {rest}" if rest else "")


def _to_stdlib(logger: Any, method_name: str, event_dict: Any) -> Any:
    args, kwargs = structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, method_name, event_dict)
    return (_Event(args[0]),), kwargs


# Shared by every library logger; the last step hands the event to stdlib logging,
# whose handler (installed by enable_logging) renders it.
_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    _to_stdlib,
]


def get_logger(name: str = _ROOT, **bound: Any) -> Any:
    """A structlog logger for library code, with ``bound`` key/values on every event."""
    stdlib_logger = logging.getLogger(name)
    return structlog.wrap_logger(
        stdlib_logger,
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        **bound,
    )


def _plain_event(logger: Any, method_name: str, event_dict: Any) -> str:
    """An event as ``event key=value ...``, for a caller's own format string
    (which brings time, level and logger name itself)."""
    rest = " ".join(f"{k}={v}" for k, v in event_dict.items() if k not in _QUIET_KEYS)
    return f"{event_dict.get('event')}" + (f" {rest}" if rest else "")


def enable_logging(
    level: str | int | None = None,
    format_string: str | None = None,
    stream: TextIO | None = None,
    force: bool = True,
    *,
    json: bool = False,
) -> None:
    """Show RHAPSODY's events: human-readable console lines, or JSON lines with
    ``json=True``. ``level`` defaults to ``$RHAPSODY_LOG_LEVEL``, else INFO.
    Every task state transition is a DEBUG event with task, backend and state.

    ``format_string``: a `logging` format (``"%(asctime)s %(levelname)s
    %(name)s %(message)s"``) whose ``%(message)s`` is the event and its
    key=values. ``force=False`` keeps an earlier call's setting. Only the
    ``rhapsody`` logger is configured, never the application's root logger."""
    global _handler
    if not force and _handler in logging.getLogger(_ROOT).handlers:
        return
    if level is None:
        level = os.environ.get(LEVEL_ENV, "INFO")
    if isinstance(level, str):
        numeric = logging.getLevelName(level.strip().upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        level = numeric
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    if format_string is not None and not json:
        renderer = _plain_event
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)],
            fmt=format_string,
        )
    )
    root = logging.getLogger(_ROOT)
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    _handler = handler
    for listener in _level_listeners:
        listener()


def on_level_change(listener: Callable[[], None]) -> None:
    """Call ``listener()`` whenever `enable_logging` changes the level (the
    plugin manager registers the state logger only while DEBUG is on)."""
    _level_listeners.append(listener)


def enable_logging_from_env() -> None:
    """Apply ``RHAPSODY_LOG_LEVEL`` once, if set and logging is not enabled yet."""
    if _handler is None and os.environ.get(LEVEL_ENV):
        enable_logging(os.environ[LEVEL_ENV], json=os.environ.get("RHAPSODY_LOG_FORMAT", "").lower() == "json")
