"""``NoopExecutionBackend``: every task ends DONE the moment it is submitted,
nothing runs. It measures RHAPSODY's own cost per task (construction,
admission, states, futures, callbacks) with no engine behind it.

This module is also the entry point ``noop`` that rhapsody-core declares in
the ``rhapsody.backends`` group, so the backend is found like every other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rhapsody.execution.backend import Backend
from rhapsody.hookspecs import hookimpl
from rhapsody.registry.records import BackendRecord

if TYPE_CHECKING:
    from rhapsody.engine.contract import EngineContext
    from rhapsody.engine.handle import TaskHandle
    from rhapsody.resources import Capacity


class NoopEngine:
    engine_name = "noop"
    task_kinds = frozenset({"compute", "ai"})

    async def start(self, context: EngineContext) -> None:
        """Nothing to start."""

    def capacity(self) -> Capacity | None:
        return None  # any request "fits": nothing is used

    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        for handle in handles:  # rhapsody-py's no-op result: True, empty output, exit 0
            handle.done(True, exit_code=0, stdout="", stderr="")

    async def cancel(self, handle: TaskHandle) -> bool:
        return False  # every task has already ended

    async def stop(self) -> None:
        """Nothing to release."""


class NoopExecutionBackend(Backend):
    """Completes every task at once without running it (``return_value`` True,
    empty output, exit code 0)."""

    def __init__(self, name: str = "noop") -> None:
        super().__init__(NoopEngine(), name)


@hookimpl
def rhapsody_register_backends() -> list[BackendRecord]:
    return [
        BackendRecord(
            name="noop",
            backend_class="rhapsody.execution.noop:NoopExecutionBackend",
            summary="ends every task DONE at once without running it (measures RHAPSODY's own overhead)",
        )
    ]
