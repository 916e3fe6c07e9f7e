"""Built-in observers of the task-state hook."""

from __future__ import annotations

import logging
from typing import Any

import pluggy

from rhapsody.hookspecs import hookimpl
from rhapsody.log import get_logger

STATE_LOGGER = "rhapsody.state-logger"


class StateLogger:
    """One structured DEBUG event per state transition (``task.state``)."""

    def __init__(self) -> None:
        self._log = get_logger("rhapsody.tasks")

    @hookimpl
    def rhapsody_task_state_changed(self, backend: Any, task: Any, old_state: Any, new_state: Any) -> None:
        event: dict[str, Any] = {"task": task.uid, "backend": backend.name, "state": new_state.value, "previous": old_state.value}
        if new_state.value == "FAILED" and task.exception is not None:
            event["error"] = f"{type(task.exception).__name__}: {task.exception}"
        if task.exit_code is not None and new_state.is_terminal:
            event["exit_code"] = task.exit_code
        self._log.debug("task.state", **event)


def sync_state_logger(pm: pluggy.PluginManager) -> None:
    """Register the state logger only while ``rhapsody.tasks`` DEBUG events are
    wanted: with no observer registered a transition costs no hook call."""
    wanted = logging.getLogger("rhapsody.tasks").isEnabledFor(logging.DEBUG)
    registered = pm.get_plugin(STATE_LOGGER) is not None
    if wanted and not registered:
        pm.register(StateLogger(), name=STATE_LOGGER)
    elif registered and not wanted:
        pm.unregister(name=STATE_LOGGER)
