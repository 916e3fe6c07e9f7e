"""``RadicalExecutionBackend``: RHAPSODY tasks in one RADICAL-Pilot pilot.

``RadicalExecutionBackend(resources={...})`` opens an RP session, submits one
pilot described by ``resources`` (any ``radical.pilot.PilotDescription`` key)
and waits until it is active. Executable tasks become RP tasks; Python
functions (sync or async) go through raptor, whose master and workers are
started at the first function task and stopped at shutdown.
"""

from __future__ import annotations

import os
from typing import Any, cast

from rhapsody.engine.host import core_count
from rhapsody.execution.backend import Backend
from rhapsody_radical import environment as envfix
from rhapsody_radical.engine import RadicalEngine, RaptorOptions
from rhapsody_radical.pilot_session import PilotSession


class RadicalExecutionBackend(Backend):
    """A RADICAL-Pilot pilot as a RHAPSODY backend.

    ``resources``: the pilot description (``resource``, ``runtime`` in minutes,
    ``cores``, ``nodes``, ``queue``, ``project``, ``sandbox`` ...). Defaults:
    ``resource="local.localhost"``, ``runtime=30``, and for local resources
    ``cores`` = the cores this machine really has. ``exit_on_error`` is always
    False (True would SIGTERM your process when the pilot fails).

    ``local_cores``: cores the backend's private ``local.localhost`` config
    declares (default: the real count). More than the real count oversubscribes
    on purpose. Ignored when you have an RP config of your own
    (``$RADICAL_CONFIG_USER_DIR`` set, or ``~/.radical/pilot/configs/resource_local.json``).

    ``raptor``: ``{"workers": 1, "cores_per_worker": 1, "eager": False}``. The
    raptor master takes one core and each worker ``cores_per_worker`` cores
    of the pilot for as long as the backend runs; ``eager=True`` starts them
    with the pilot instead of at the first function task.

    ``network_interface``: the interface whose address RP's processes give
    each other. Default for local resources: loopback (``lo``), unless
    ``$RADICAL_DEFAULT_IFACE`` is set; elsewhere RP's own choice.

    ``start_timeout``: seconds to wait for the pilot to become active.
    """

    def __init__(
        self,
        resources: dict[str, Any] | None = None,
        name: str = "radical_pilot",
        *,
        local_cores: int | None = None,
        raptor: dict[str, Any] | None = None,
        network_interface: str | None = None,
        start_timeout: float = 600.0,
    ) -> None:
        desc = dict(resources or {})
        if desc.get("exit_on_error"):
            raise ValueError(
                "exit_on_error=True would SIGTERM this process when the pilot fails; RHAPSODY reports it as BackendError instead"
            )
        desc["exit_on_error"] = False
        desc.setdefault("resource", "local.localhost")
        desc.setdefault("runtime", 30)
        if local_cores is not None and (not isinstance(local_cores, int) or local_cores < 1):
            raise ValueError(f"local_cores must be a positive int, got {local_cores!r}")
        local = str(desc["resource"]).startswith("local.")
        cores = local_cores or core_count()
        if local and "cores" not in desc and "nodes" not in desc:
            desc["cores"] = cores
        opts = dict(raptor or {})
        unknown = set(opts) - {"workers", "cores_per_worker", "eager"}
        if unknown:
            raise ValueError(f"unknown raptor option(s): {', '.join(sorted(unknown))}")
        if network_interface is None and local and not os.environ.get(envfix.IFACE_ENV):
            network_interface = envfix.LOOPBACK
        pilot = PilotSession(desc, local=local, local_cores=cores, iface=network_interface)
        engine = RadicalEngine(pilot, RaptorOptions(**opts), start_timeout)
        super().__init__(engine, name)

    @property
    def pilot_description(self) -> dict[str, Any]:
        return dict(cast(RadicalEngine, self.engine).pilot.description)

    @property
    def rp_session(self) -> Any:
        """The ``radical.pilot.Session`` (None before start)."""
        return cast(RadicalEngine, self.engine).pilot.session

    @property
    def pilot(self) -> Any:
        """The ``radical.pilot.Pilot`` (None before start)."""
        return cast(RadicalEngine, self.engine).pilot.pilot

    @property
    def swept(self) -> list[int]:
        """Pids the last shutdown had to kill itself (RP left them running)."""
        return list(cast(RadicalEngine, self.engine).swept)
