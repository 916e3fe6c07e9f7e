"""rhapsody-py's ``rhapsody.backends.constants``: main task and backend states,
and `StateMapper`, which translates an engine's own state values to them.

Every RHAPSODY backend reports RHAPSODY's states (`rhapsody.TaskState`), so a
mapper for one of them is the identity; the table is kept for programs (and
radical.asyncflow-style code) that register engines of their own.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar


class TasksMainStates(str, enum.Enum):
    """A task's main states; equal to the plain strings (and `rhapsody.TaskState`)."""

    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    RUNNING = "RUNNING"

    def __str__(self) -> str:
        return self.value


class BackendMainStates(str, enum.Enum):
    INITIALIZED = "INITIALIZED"
    RUNNING = "RUNNING"
    SHUTDOWN = "SHUTDOWN"

    def __str__(self) -> str:
        return self.value


def _key(backend: Any) -> str:
    if isinstance(backend, str):
        return backend.lower()
    name = getattr(backend, "__name__", None) or type(backend).__name__
    return str(name).lower()


_DEFAULT_TASK_STATES: dict[enum.Enum, Any] = {s: s.value for s in TasksMainStates}


class StateMapper:
    """``StateMapper(backend)``: ``mapper.DONE`` is that backend's value for
    DONE, ``mapper.to_main_state(value)`` the way back. A backend that never
    registered a table (every RHAPSODY backend) uses the main states' own values."""

    _tables: ClassVar[dict[str, dict[enum.Enum, Any]]] = {}

    def __init__(self, backend: str | Any) -> None:
        self.backend_name = _key(backend)
        self.backend_module = None if isinstance(backend, str) else backend
        self._state_map = self._tables.get(self.backend_name, _DEFAULT_TASK_STATES)
        self._reverse_map = {value: state for state, value in self._state_map.items()}

    @classmethod
    def register_backend_tasks_states(
        cls, backend: str | Any, done_state: Any, failed_state: Any, canceled_state: Any, running_state: Any, **additional_states: Any
    ) -> None:
        """Register ``backend``'s values for the main task states; extra keywords
        name further main states (``pending="QUEUED"``)."""
        table: dict[enum.Enum, Any] = {
            TasksMainStates.DONE: done_state,
            TasksMainStates.FAILED: failed_state,
            TasksMainStates.CANCELED: canceled_state,
            TasksMainStates.RUNNING: running_state,
        }
        for name, value in additional_states.items():
            table[TasksMainStates[name.upper()]] = value
        cls._tables[_key(backend)] = table

    @classmethod
    def register_backend_tasks_states_with_defaults(cls, backend: str | Any) -> None:
        cls._tables[_key(backend)] = dict(_DEFAULT_TASK_STATES)

    @classmethod
    def register_backend_states(
        cls, backend: str | Any, initialized_state: Any, running_state: Any, shutdown_state: Any, **additional_states: Any
    ) -> None:
        """Register ``backend``'s values for its own lifecycle states."""
        table: dict[enum.Enum, Any] = {
            BackendMainStates.INITIALIZED: initialized_state,
            BackendMainStates.RUNNING: running_state,
            BackendMainStates.SHUTDOWN: shutdown_state,
        }
        for name, value in additional_states.items():
            table[BackendMainStates[name.upper()]] = value
        cls._tables[f"{_key(backend)}_backend_states"] = table

    @classmethod
    def register_backend_states_with_defaults(cls, backend: str | Any) -> None:
        cls.register_backend_states(backend, "INITIALIZED", "RUNNING", "SHUTDOWN")

    def __getattr__(self, name: str) -> Any:
        try:
            return self._state_map[TasksMainStates[name]]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!r} has no state {name!r}") from None

    def to_main_state(self, backend_state: Any) -> TasksMainStates:
        try:
            return self._reverse_map[backend_state]  # type: ignore[return-value]
        except (KeyError, TypeError):
            raise ValueError(f"unknown state {backend_state!r} for backend {self.backend_name!r}") from None

    def get_backend_state(self, main_state: TasksMainStates | str) -> Any:
        key = TasksMainStates[main_state] if isinstance(main_state, str) and not isinstance(main_state, TasksMainStates) else main_state
        return self._state_map[key]

    @property
    def terminal_states(self) -> tuple[Any, ...]:
        return (self.DONE, self.FAILED, self.CANCELED)
