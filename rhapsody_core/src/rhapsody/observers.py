"""Built-in observers of the task-state hook."""

from __future__ import annotations

import logging
from typing import Any

from rhapsody.hookspecs import hookimpl
from rhapsody.log import get_logger


class StateLogger:
    """One structured DEBUG event per state transition (``task.state``)."""

    def __init__(self) -> None:
        self._stdlib = logging.getLogger("rhapsody.tasks")
        self._log = get_logger("rhapsody.tasks")

    @hookimpl
    def rhapsody_task_state_changed(self, backend: Any, task: Any, old_state: Any, new_state: Any) -> None:
        # The level check keeps the disabled case to a dict lookup on the hot path.
        if not self._stdlib.isEnabledFor(logging.DEBUG):
            return
        event: dict[str, Any] = {"task": task.uid, "backend": backend.name, "state": new_state.value, "previous": old_state.value}
        if new_state.value == "FAILED" and task.exception is not None:
            event["error"] = f"{type(task.exception).__name__}: {task.exception}"
        if task.exit_code is not None and new_state.is_terminal:
            event["exit_code"] = task.exit_code
        self._log.debug("task.state", **event)
