"""Retries: which failures run a task again, and how long to wait first.

Core decides, the same on every engine: a failure that is not the task's own
fault (a `BackendError`: worker or pilot lost, engine refused or crashed) is
retried while the task has retries left; exception types listed in
``retry_on`` (the task's, then the backend's) are retried too, e.g.
``TaskTimeoutError`` or a user exception known to be transient.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from rhapsody.errors import BackendError


def _check_retries(_: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an int >= 0, got {value!r}")


def _check_seconds(_: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, got {value!r}")


def check_retry_on(value: Any) -> tuple[type[BaseException], ...]:
    """``retry_on`` as a tuple of exception classes; raises `TypeError` naming a bad entry."""
    if isinstance(value, type):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"retry_on must be an exception class or a tuple of them, got {type(value).__name__}")
    for entry in value:
        if not (isinstance(entry, type) and issubclass(entry, BaseException)):
            raise TypeError(f"retry_on entries must be exception classes, got {entry!r}")
    return tuple(value)


@attrs.frozen
class RetryPolicy:
    """The backend-wide default: ``retries`` more attempts per task (a task's
    own ``retries=`` overrides it), waiting ``backoff * 2**(n-1)`` seconds
    before retry n (at most ``max_backoff``), scaled by a random factor in
    [0.5, 1] (jitter: tasks failed together do not come back together)."""

    retries: int = attrs.field(default=0, validator=_check_retries)
    backoff: float = attrs.field(default=0.5, validator=_check_seconds)
    max_backoff: float = attrs.field(default=30.0, validator=_check_seconds)
    retry_on: tuple[type[BaseException], ...] = attrs.field(default=(), converter=check_retry_on)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        base = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        return base * random.uniform(0.5, 1.0)  # jitter, not cryptography

    def allows(self, task: Any, error: BaseException | None) -> bool:
        """Whether ``task``, which just failed with ``error``, gets another attempt."""
        budget = self.retries if task.retries is None else task.retries
        if task.attempt > budget:
            return False
        if isinstance(error, BackendError):  # engine trouble, never the task's own fault
            return True
        return error is not None and isinstance(error, (*task.retry_on, *self.retry_on))


NO_RETRIES = RetryPolicy()
