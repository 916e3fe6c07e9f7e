"""The engine contract: what a backend plugin writes.

A plugin supplies an object with the methods of `Engine`; core wraps it in a
`rhapsody.Backend` that users hold and that owns everything that must behave the
same on every engine (lifecycle, states, futures, timeouts, cancel bookkeeping,
hooks, capacity checks, the radical.asyncflow protocol). The engine only
translates: tasks in (`submit`), events out (through each task's `TaskHandle`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rhapsody.engine.handle import TaskHandle
    from rhapsody.resources import Capacity


class EngineContext:
    """What core tells an engine when it starts it: the backend's ``name``,
    its ``work_dir`` (where task artifacts and engine sandboxes belong), a
    structlog ``log`` bound to the backend, and ``call_soon(fn, *args)``, which
    runs ``fn`` on the backend's event loop: at once when called there, else
    soon, after the task-handle reports made before it from the same thread
    (many per wake-up of the loop)."""

    __slots__ = ("call_soon", "log", "name", "work_dir")

    def __init__(self, name: str, work_dir: Path, log: Any, call_soon: Callable[..., None]) -> None:
        self.name, self.work_dir, self.log, self.call_soon = name, work_dir, log, call_soon


@runtime_checkable
class Engine(Protocol):
    """What a backend plugin implements: the five methods below, and optionally
    these attributes (core reads them with defaults):

    - ``engine_name``: the engine's name in messages, e.g. "dask" (default: the class name);
    - ``task_kinds``: task kinds it runs, ``ComputeTask.kind`` "compute" and
      ``AITask.kind`` "ai" (default ``frozenset({"compute"})``);
    - ``accepted_keys``: ``task_backend_specific_kwargs`` keys it understands
      beyond core's ``cwd`` / ``env`` / ``shell`` (default none); a task with any
      other key FAILS with a `TaskValidationError` naming it;
    - ``start_timeout`` / ``stop_timeout``: seconds `start` / `stop` may take
      before core gives up with a `BackendError` (default 300 / 120);
    - ``async def sample_resources() -> Sequence[NodeSample]``: what its nodes or
      workers use now (`rhapsody.resources.NodeSample`; telemetry polls it, see
      `rhapsody.engine.sampling.LocalNodeSampler` for the local host). An engine
      without it has no resource samples, which is not an error.
    - ``tasks_coming(count: int) -> None``: called on the loop as soon as core
      has a batch of ``count`` tasks for this engine, before it checks them and
      does its bookkeeping (futures, admission, SUBMITTED). An engine whose idle
      worker sleeps may wake it here, so that the wake-up (tens of microseconds
      on a VM) overlaps that work. It must not block, and must not count on the
      tasks: `submit` may bring fewer (some fail admission) or none (the batch
      was refused), and may come after other coroutines ran.

    Every coroutine runs on the backend's event loop. Nothing may block it: run
    blocking engine calls in a thread (``asyncio.to_thread``).
    """

    async def start(self, context: EngineContext) -> None:
        """Start or connect to the engine. Raise to fail ``await backend``;
        core then calls `stop` to release what was acquired."""

    def capacity(self) -> Capacity | None:
        """The most one task may ask for (None: unknown). Core fails a task
        that can never fit before `submit` sees it. Asked on every submission:
        read what cannot change while the engine runs once, at `start`."""

    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        """Hand tasks to the engine; return without waiting for them. Each
        handle's task is SUBMITTED; report through the handle. An executable
        task's launch is ``handle.launch`` (a `LaunchSpec`). Raising fails
        every task of the call with a BackendError naming the cause; fail one
        bad task through its own handle instead."""

    async def cancel(self, handle: TaskHandle) -> bool:
        """Stop one task. Return True once it will not run on (removed from a
        queue, or its processes signalled), False if the engine can no longer
        stop it (it already finished). On True core marks it CANCELED and drops
        anything the engine reports for it later."""

    async def stop(self) -> None:
        """Release the engine. Tasks still in flight were cancelled just
        before. Also called after a failed `start`."""


def engine_label(engine: object) -> str:
    return getattr(engine, "engine_name", None) or type(engine).__name__
