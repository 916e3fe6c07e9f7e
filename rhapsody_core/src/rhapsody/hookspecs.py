"""The hooks RHAPSODY calls. Backends register through the first; observers
(logging, progress, telemetry, journals, policy) implement the others.

Implement them with ``@rhapsody.hookimpl`` in a module named by an entry point in
the ``rhapsody.backends`` group (backends) or registered on the plugin manager
(observers). Every hook is called from the event loop thread, never concurrently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from rhapsody.execution.backend import Backend
    from rhapsody.registry.records import BackendRecord
    from rhapsody.states import TaskState
    from rhapsody.task import BaseTask

PROJECT = "rhapsody"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rhapsody_register_backends() -> Sequence[BackendRecord]:  # type: ignore[empty-body]
    """Declare the backends a plugin provides.

    Called once per process, the first time backends are discovered. Return a
    sequence of `rhapsody.BackendRecord`, one per backend; each record's
    ``name`` must equal one of the plugin distribution's entry-point names in the
    ``rhapsody.backends`` group. Keep the module light: name the backend class
    by import path, do not import the engine here. Not firstresult: results of
    all plugins are collected.
    """


@hookspec
def rhapsody_task_submit(backend: Backend, tasks: Sequence[BaseTask]) -> None:
    """A batch of validated tasks is about to be handed to ``backend``'s engine.

    Called once per ``submit_tasks`` call, after every task passed validation and
    routing and before any is moved to SUBMITTED. Raising an exception refuses
    the whole batch: nothing is handed to the engine and the exception reaches
    the caller of ``submit_tasks``. The return value is ignored. Not
    firstresult: every implementation is called.
    """


@hookspec
def rhapsody_task_cancel(backend: Backend, task: BaseTask, reason: str) -> None:
    """Cancellation of a task that has not ended was requested.

    Called before the backend asks its engine to stop the task; ``reason`` is
    ``"user"``, ``"timeout"`` or ``"shutdown"``. The return value is ignored.
    Not firstresult: every implementation is called.
    """


@hookspec
def rhapsody_task_state_changed(backend: Backend, task: BaseTask, old_state: TaskState, new_state: TaskState) -> None:
    """A task moved from ``old_state`` to ``new_state``.

    The single place every transition of every task flows through, called right
    after ``task.state`` and ``task.timestamps`` were updated and before anyone
    awaiting the task is woken. On a terminal state the result fields are filled
    in. A retried task (``task.retries``) goes back to SUBMITTED with
    ``task.attempt`` counting the new attempt and the failed attempt's error
    in ``task.attempt_errors[-1]``; a task a journal restored goes
    SUBMITTED -> DONE. Keep it cheap: it runs on the hot path. The return value is ignored;
    an exception is logged and does not stop other observers or the task.
    Not firstresult: every implementation is called.
    """
