"""One RADICAL-Pilot session holding one pilot (and its raptor), set up so that
RP works on this machine and leaves nothing behind. Blocking calls: the engine
runs them in threads."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rhapsody.errors import BackendError
from rhapsody.resources import Capacity
from rhapsody_radical import environment as envfix
from rhapsody_radical import id_counter, loopback

RAPTOR_STOP_TIMEOUT = 15.0


class PilotSession:
    """``description``: the pilot description. ``local``: a ``local.*``
    resource (its processes are on this machine). ``local_cores``: cores the
    private ``local.localhost`` config declares. ``iface``: the network
    interface RP's processes advertise (None: RP's choice)."""

    def __init__(
        self, description: dict[str, Any], *, local: bool, local_cores: int, local_gpus: int | None = None, iface: str | None
    ) -> None:
        self.description = description
        self.local, self.local_cores, self.local_gpus, self.iface = local, local_cores, local_gpus, iface
        self.rp: Any = None  # the radical.pilot module, imported when the session opens
        self.session: Any = None
        self.pmgr: Any = None
        self.tmgr: Any = None
        self.pilot: Any = None
        self.base: Path | None = None
        self._config_env: tuple[str, str | None] | None = None
        self._error: BackendError | None = None
        self._error_lock = threading.Lock()

    def bind_address(self) -> str | None:
        """Where RP's sockets listen: loopback for a local pilot whose processes
        talk over loopback (RP alone binds every interface), else RP's choice."""
        iface = self.iface or os.environ.get(envfix.IFACE_ENV)
        return loopback.LOOPBACK_ADDRESS if self.local and iface == envfix.LOOPBACK else None

    @property
    def sid(self) -> str | None:
        return self.session.uid if self.session is not None else None

    def capacity(self) -> Capacity | None:
        cores, gpus = self.description.get("cores"), self.description.get("gpus")
        if gpus is None:  # not asked for: this machine's (local), else unknown, never a claimed 0
            gpus = self.local_gpus if self.local else None
        if not isinstance(cores, int) or cores < 1:
            return None
        if not self.local:
            return Capacity(cores=cores, ranks=cores, gpus=gpus)
        # local.localhost launches one rank with FORK; more ranks need an MPI launcher
        mpi = shutil.which("mpiexec") or shutil.which("mpirun")
        node = Capacity.node(cores, gpus=gpus)
        return node if mpi else Capacity(cores=cores, cores_per_rank=cores, ranks=1, gpus=gpus, gpus_per_rank=gpus)

    # ------------------------------------------------------------------ open
    def open(self, base: Path, timeout: float, on_pilot: Callable[..., Any], on_task: Callable[..., Any]) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        for sub in ("stdio", "tmp"):
            (base / sub).mkdir(exist_ok=True)
        with envfix.ENV_LOCK:
            envfix.apply_process_env()
            if self.local and envfix.user_has_rp_config() is None:
                cfg = envfix.write_private_config(base / "config", self.local_cores, envfix.real_memory_mb(), self.local_gpus)
                self._config_env = (envfix.CONFIG_ENV, os.environ.get(envfix.CONFIG_ENV))
                os.environ[envfix.CONFIG_ENV] = str(cfg)
            with envfix.spawn_env(base / "tmp", self.iface, self.bind_address()):
                import radical.pilot as rp  # noqa: PLC0415 - the engine is imported only here

                id_counter.install()
                self.rp = rp
                self.session = rp.Session(cfg={"base": str(base), "client_sandbox": str(base)})
                self.pmgr = rp.PilotManager(self.session)
                self.tmgr = rp.TaskManager(self.session)
        self.pmgr.register_callback(on_pilot)
        self.tmgr.register_callback(on_task)
        desc = dict(self.description)
        desc.setdefault("sandbox", str(base / "sandbox"))
        self.pilot = self.pmgr.submit_pilots(rp.PilotDescription(desc))
        self.tmgr.add_pilots(self.pilot)
        final = [rp.PMGR_ACTIVE, rp.FAILED, rp.CANCELED, rp.DONE]
        state = self.pilot.wait(state=final, timeout=timeout)
        if state != rp.PMGR_ACTIVE:
            if state not in final:
                raise BackendError(
                    f"pilot {self.pilot.uid} on {desc['resource']} did not become active within {timeout:g} s (state {state})"
                )
            raise self.failure(state)

    def is_final(self) -> bool:
        rp, pilot = self.rp, self.pilot
        return pilot is not None and pilot.state in (rp.FAILED, rp.CANCELED, rp.DONE)

    def failure(self, state: str | None = None) -> BackendError:
        """The error every task of a dead pilot ends with (built once), with
        the agent's own account of why."""
        with self._error_lock:
            if self._error is None:
                pilot = self.pilot
                state = state or (pilot.state if pilot is not None else "unknown")
                sandbox = envfix.url_path(getattr(pilot, "pilot_sandbox", None)) if pilot is not None else None
                text, died = envfix.agent_error_text(sandbox), envfix.agent_exit(sandbox)
                uid = pilot.uid if pilot is not None else "pilot"
                message = f"RADICAL-Pilot pilot {uid} on {self.description.get('resource')} ended ({state})"
                message += f": {died}" if died else ""
                message += f": {text}" if text else f"; the agent left no error text in {sandbox}"
                self._error = BackendError(message)
            return self._error

    # ------------------------------------------------------------------ raptor
    def start_raptor(self, workers: int, cores_per_worker: int) -> tuple[Any, list[str]]:
        """A raptor master and ``workers`` RHAPSODY workers (`raptor_worker`);
        returns the master and the workers' uids."""
        rp = self.rp
        (master,) = self.pilot.submit_raptors([rp.TaskDescription({"mode": rp.RAPTOR_MASTER})])
        return master, self.add_workers(master, workers, cores_per_worker)

    def add_workers(self, master: Any, count: int, cores_per_worker: int) -> list[str]:
        rp = self.rp
        description = {
            "mode": rp.RAPTOR_WORKER,
            "ranks": 1,
            "cores_per_rank": cores_per_worker,
            "raptor_file": str(Path(__file__).with_name("raptor_worker.py")),
            "raptor_class": "RhapsodyWorker",
        }
        return [worker.uid for worker in master.submit_workers([rp.TaskDescription(description) for _ in range(count)])]

    # ------------------------------------------------------------------ close
    def close(self, raptor: Any) -> list[int]:
        """Stop raptor, close the session, then release what RP 1.103 leaves
        behind: listening sockets here, processes of the session (local
        resources: returned, the pids it had to kill), the config override."""
        try:
            if raptor is not None and not self.is_final():
                _bounded(lambda: raptor.rpc("stop"), RAPTOR_STOP_TIMEOUT)
            if self.session is not None:
                self.session.close(terminate=True, download=False)
        finally:
            envfix.close_manager_sockets(self.session, self.pmgr, self.tmgr)
            swept = envfix.sweep(self.sid) if self.sid and self.local else []
            if self._config_env is not None:
                key, old = self._config_env
                with envfix.ENV_LOCK:
                    if old is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = old
                self._config_env = None
        return swept


def _bounded(fn: Callable[[], Any], seconds: float) -> None:
    """Run ``fn`` in a daemon thread; stop waiting for it after ``seconds``."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - best effort during shutdown
            pass
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="rhapsody-radical-stop").start()
    done.wait(seconds)
