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
    """

    def __init__(self, name: str = "concurrent", executor: Executor | None = None, *, cores: int | None = None) -> None:
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
        if cores is not None and (not isinstance(cores, int) or isinstance(cores, bool) or cores < 1):
            raise ValueError(f"cores must be a positive int, got {cores!r}")
        cores = cores or getattr(executor, "_max_workers", None) or core_count()
        super().__init__(ConcurrentEngine(executor, cores), name)

    @property
    def executor(self) -> Executor | None:
        """The pool functions run on (after start)."""
        return self.engine.executor  # type: ignore[attr-defined,no-any-return]
