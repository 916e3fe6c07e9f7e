"""Task states and the one state machine every backend reports through."""

from __future__ import annotations

import enum

from rhapsody.errors import IllegalStateTransition


class TaskState(str, enum.Enum):
    """Lifecycle of a task. Values are the plain strings the seed system used."""

    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:  # the plain string, as rhapsody-py's states print (in lists, dicts, f"{x!r}")
        return repr(self.value)

    # Enum's own __hash__ is Python code (hash of the name); every name here is
    # its value, so the str hash is the same number, computed in C: states are
    # looked up in sets and dicts on every transition.
    __hash__ = str.__hash__

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELED})

# A retry (rhapsody.retry) moves a task back to SUBMITTED from RUNNING or
# SUBMITTED; it is made by the tracker's retry path only, so it is not an edge
# here: any other move back stays a bug.
# SUBMITTED -> terminal without RUNNING is legal: engines may finish a task before
# they tell anyone it started, and a queued task can be cancelled.
_LEGAL: dict[TaskState, frozenset[TaskState]] = {
    TaskState.NEW: frozenset({TaskState.SUBMITTED, TaskState.FAILED, TaskState.CANCELED}),
    TaskState.SUBMITTED: frozenset({TaskState.RUNNING, *TERMINAL_STATES}),
    TaskState.RUNNING: TERMINAL_STATES,
    TaskState.DONE: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELED: frozenset(),
}


def check_transition(uid: str, old: TaskState, new: TaskState) -> None:
    """Raise `IllegalStateTransition` unless ``old -> new`` is allowed."""
    if new not in _LEGAL[old]:
        raise IllegalStateTransition(uid, old, new)


def legal_successors(state: TaskState) -> frozenset[TaskState]:
    return _LEGAL[state]


class StateMap:
    """The state table radical.asyncflow reads from ``backend.get_task_states_map()``."""

    NEW = TaskState.NEW.value
    SUBMITTED = TaskState.SUBMITTED.value
    RUNNING = TaskState.RUNNING.value
    DONE = TaskState.DONE.value
    FAILED = TaskState.FAILED.value
    CANCELED = TaskState.CANCELED.value
    terminal_states = frozenset(s.value for s in TERMINAL_STATES)
