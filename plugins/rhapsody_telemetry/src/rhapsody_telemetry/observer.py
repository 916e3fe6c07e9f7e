"""What telemetry hangs on the backends it watches.

`TransitionTap.observe` is a state observer of each watched backend
(`Backend.add_state_observer`: called directly, not through the plugin
manager, on every transition); the submit hook stays a pluggy hook (once a
batch). Both run on the hot path, so they only queue what happened;
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
        self.active = False  # between the manager's start and stop

    def observe(self, backend: Any, task: Any, old_state: Any, new_state: Any) -> None:
        if self.active and id(backend) in self.watched:
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
