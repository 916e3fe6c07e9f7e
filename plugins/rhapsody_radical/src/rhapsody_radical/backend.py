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

import attrs

from rhapsody.engine.host import core_count, gpu_count
from rhapsody.execution.backend import Backend
from rhapsody_radical import environment as envfix
from rhapsody_radical.engine import RadicalEngine, RaptorOptions
from rhapsody_radical.pilot_session import PilotSession
from rhapsody_radical.raptor_config import raptor_options


class RadicalExecutionBackend(Backend):
    """A RADICAL-Pilot pilot as a RHAPSODY backend.

    ``resources``: the pilot description (``resource``, ``runtime`` in minutes,
    ``cores``, ``nodes``, ``queue``, ``project``, ``sandbox`` ...). Defaults:
    ``resource="local.localhost"``, ``runtime=30``, and for local resources
    ``cores`` = the cores this machine really has. ``exit_on_error`` is always
    False (True would SIGTERM your process when the pilot fails).

    ``gpus``: for local resources, default the GPUs this machine has
    (`rhapsody.engine.host.gpu_count`) unless you have an RP config of your
    own; elsewhere what you ask for (``capacity()`` says unknown, not 0, when
    you do not say).

    ``local_cores``: cores the backend's private ``local.localhost`` config
    declares (default: the real count). More than the real count oversubscribes
    on purpose. Ignored when you have an RP config of your own
    (``$RADICAL_CONFIG_USER_DIR`` set, or ``~/.radical/pilot/configs/resource_local.json``).

    ``raptor``: ``{"workers": 1, "cores_per_worker": 1, "eager": False}``. The
    raptor master takes one core and each worker ``cores_per_worker`` cores
    of the pilot for as long as the backend runs; ``eager=True`` starts them
    with the pilot instead of at the first function task.

    ``raptor_config``: rhapsody-py 0.6's raptor description (``{"masters":
    [{"workers": [{"ranks": 1}, ...]}]}``), mapped onto ``raptor=``: one
    worker per entry, raptor started with the pilot (`raptor_config` module
    says what maps and what raises). Positional order follows rhapsody-py:
    ``(resources, raptor_config, name)``; ``.create(...)`` takes the same.

    ``network_interface``: the interface whose address RP's processes give
    each other. Default for local resources: loopback (``lo``), unless
    ``$RADICAL_DEFAULT_IFACE`` is set; elsewhere RP's own choice. On loopback
    RP's sockets also listen on 127.0.0.1 only (otherwise on every interface).

    ``start_timeout``: seconds to wait for the pilot to become active.
    """

    def __init__(
        self,
        resources: dict[str, Any] | None = None,
        raptor_config: dict[str, Any] | None = None,
        name: str | None = "radical_pilot",
        *,
        local_cores: int | None = None,
        raptor: dict[str, Any] | None = None,
        network_interface: str | None = None,
        start_timeout: float = 600.0,
    ) -> None:
        # positional order is rhapsody-py 0.6's (resources, raptor_config, name)
        if isinstance(raptor_config, str):
            raise TypeError(
                f"RadicalExecutionBackend's second argument is raptor_config (a dict), got the str {raptor_config!r}; pass name= by keyword"
            )
        if raptor_config and raptor is not None:
            raise ValueError("give either raptor= (RHAPSODY's options) or raptor_config= (rhapsody-py's), not both")
        if raptor_config:  # rhapsody-py treats {} as "no raptor config"
            raptor = raptor_options(raptor_config)
        if resources is not None and not isinstance(resources, dict):
            raise TypeError(f"resources= must be a dict of pilot description keys, got {type(resources).__name__}")
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
        # the pilot gets this machine's GPUs, as it gets its cores, through the
        # private config; with the user's own RP config, theirs decides (unknown here)
        local_gpus = gpu_count() if local and envfix.user_has_rp_config() is None else None
        if "gpus" not in desc and local_gpus:
            desc["gpus"] = local_gpus
        opts = dict(raptor or {})
        unknown = set(opts) - {"workers", "cores_per_worker", "eager"}
        if unknown:
            raise ValueError(f"unknown raptor option(s): {', '.join(sorted(unknown))}")
        if network_interface is None and local and not os.environ.get(envfix.IFACE_ENV):
            network_interface = envfix.LOOPBACK
        pilot = PilotSession(desc, local=local, local_cores=cores, local_gpus=local_gpus, iface=network_interface)
        engine = RadicalEngine(pilot, RaptorOptions(**opts), start_timeout)
        super().__init__(engine, "radical_pilot" if name is None else name)

    @property
    def pilot_description(self) -> dict[str, Any]:
        return dict(cast(RadicalEngine, self.engine).pilot.description)

    @property
    def raptor_options(self) -> dict[str, Any]:
        """How raptor is run here (``workers``, ``cores_per_worker``, ``eager``),
        from ``raptor=`` or mapped from ``raptor_config=``."""
        return attrs.asdict(cast(RadicalEngine, self.engine).raptor_options)

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
