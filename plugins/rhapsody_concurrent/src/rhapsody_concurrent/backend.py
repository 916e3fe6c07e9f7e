"""``ConcurrentExecutionBackend``: RHAPSODY's embedded default backend."""

from __future__ import annotations

from concurrent.futures import Executor

from rhapsody.engine import core_count
from rhapsody.execution.backend import Backend
from rhapsody_concurrent.engine import ConcurrentEngine


class ConcurrentExecutionBackend(Backend):
    """Functions on ``executor`` (default: a pool of daemon threads, one per
    core), executables as local processes.

    ``cores``: how many cores' worth of tasks may run at once; default the
    ``max_workers`` of the executor you pass, else the cores this process may
    use. A user's executor is left open at shutdown: it is theirs.

    ``name`` and ``executor`` may also be given by position, in either order
    (``ConcurrentExecutionBackend(pool, "local")`` is rhapsody-py's order): a
    str is the name, an Executor the executor.
    """

    def __init__(
        self, *positional: str | Executor | None, name: str | None = None, executor: Executor | None = None, cores: int | None = None
    ) -> None:
        name, executor = _name_and_executor(positional, name, executor)
        if cores is not None and (not isinstance(cores, int) or isinstance(cores, bool) or cores < 1):
            raise ValueError(f"cores must be a positive int, got {cores!r}")
        cores = cores or getattr(executor, "_max_workers", None) or core_count()
        super().__init__(ConcurrentEngine(executor, cores), name)

    @property
    def executor(self) -> Executor | None:
        """The pool functions run on (after start)."""
        return self.engine.executor  # type: ignore[attr-defined,no-any-return]


def _name_and_executor(positional: tuple[object, ...], name: str | None, executor: Executor | None) -> tuple[str, Executor | None]:
    """Sort positional arguments by type: unambiguous, since a name is a str and an executor never is."""
    if len(positional) > 2:
        raise TypeError(f"ConcurrentExecutionBackend takes at most 2 positional arguments (name, executor), got {len(positional)}")
    for value in positional:
        if value is None:
            continue
        if not isinstance(value, (str, Executor)):
            raise TypeError(f"executor must be a concurrent.futures.Executor (and name a str), got {type(value).__name__}")
        if isinstance(value, str):
            if name is not None:
                raise TypeError("ConcurrentExecutionBackend got two names")
            name = value
        else:
            if executor is not None:
                raise TypeError("ConcurrentExecutionBackend got two executors")
            executor = value
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    return name or "concurrent", executor
