"""The hook implementation telemetry registers for the backends it watches.

It runs on the hot path of every transition, so it only queues what happened;
`TelemetryManager` turns the queue into metrics, spans and events a few times
a second, off that path.
"""

from __future__ import annotations

from typing import Any

from rhapsody.hookspecs import hookimpl


class TransitionTap:
    """Queues ``(backend, task, old, new)`` for the watched backends."""

    def __init__(self) -> None:
        self.watched: set[int] = set()  # id() of each watched Backend
        self.queue: list[tuple[Any, Any, Any, Any]] = []
        #: task uid -> the OTel context active when it was submitted, when that is not the default
        self.contexts: dict[str, Any] = {}
        self.capture_context: Any = None  # set by the manager: returns the context to keep, or None

    @hookimpl
    def rhapsody_task_state_changed(self, backend: Any, task: Any, old_state: Any, new_state: Any) -> None:
        if id(backend) in self.watched:
            self.queue.append((backend, task, old_state, new_state))

    @hookimpl
    def rhapsody_task_submit(self, backend: Any, tasks: Any) -> None:
        # One look per batch: a span active around submit_tasks (a workflow
        # scope) becomes the parent of these tasks' spans.
        if id(backend) in self.watched and self.capture_context is not None:
            context = self.capture_context()
            if context is not None:
                for task in tasks:
                    self.contexts[task.uid] = context
