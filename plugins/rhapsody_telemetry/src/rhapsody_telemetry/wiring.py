"""How a `TelemetryManager` is connected to what it observes: a session's
backends (their task transitions and resources) and custom event sources."""

from __future__ import annotations

from typing import Any

from rhapsody.registry import get_plugin_manager
from rhapsody_telemetry.sampling import ResourcePoller
from rhapsody_telemetry.scopes import Scopes


class Wiring(Scopes):  # its resource pollers emit
    def observe_session(self, session: Any, resource_poll_interval: float = 5.0) -> None:
        """Watch every task of ``session``'s backends (and backends added later)."""
        if not resource_poll_interval > 0:
            raise ValueError(f"resource_poll_interval must be > 0 seconds, got {resource_poll_interval!r}")
        self._poll_interval = resource_poll_interval
        for backend in session.backends.values():
            self.observe_backend(backend)

    def observe_backend(self, backend: Any) -> None:
        self._tap.watch(backend, self._ledger.of(backend.name))
        self.attach_backend(backend, session_id=self._session_id, backend_name=backend.name, interval=self._poll_interval)
        if self._running and get_plugin_manager().get_plugin(self._tap_name) is None:
            get_plugin_manager().register(self._tap, name=self._tap_name)

    def attach_backend(
        self, backend: Any, *, session_id: str | None = None, backend_name: str | None = None, interval: float = 5.0
    ) -> None:
        """Poll ``backend``'s resources every ``interval`` seconds. A backend
        whose engine has no sampler reports none; that is not an error. (Its
        tasks are watched by `Session.start_telemetry`; a caller that emits
        its own task events, like radical.asyncflow, attaches only this.)"""
        if id(backend) in self._pollers or not hasattr(backend, "sample_resources"):
            return
        name = str(backend_name or getattr(backend, "name", None) or type(backend).__name__)
        poller = ResourcePoller(backend, name, session_id or self._session_id, interval, self.emit)
        self._pollers[id(backend)] = poller
        if self._running:
            poller.start()

    def register_adapter(self, adapter: Any) -> None:
        """A custom source with ``start()`` / ``stop()`` that calls ``emit``;
        ``adapter._manager`` is set to this manager."""
        adapter._manager = self
        self._adapters.append(adapter)
        if self._running:
            adapter.start()
