"""RHAPSODY tasks in one RADICAL-Pilot pilot.

``RadicalExecutionBackend(resources={...})`` opens an RP session, submits one
pilot described by ``resources`` (any ``radical.pilot.PilotDescription`` key)
and waits until it is active. Executable tasks become RP tasks; Python
functions (sync or async) go through raptor, whose master and workers are
started at the first function task and stopped at shutdown.
"""

from __future__ import annotations

import asyncio
import math
import os
import shlex
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.errors import BackendError, TaskExecutionError, TaskTimeoutError
from rhapsody.resources import Resources
from rhapsody.task import BaseTask, ComputeTask
from rhapsody_radical import environment as envfix
from rhapsody_radical import remote

_SHELL = "/bin/sh"
_OWN_KWARGS = ("cwd", "env", "shell")


class RadicalExecutionBackend(BaseExecutionBackend):
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

    ``start_timeout``: seconds to wait for the pilot to become active.
    """

    def __init__(
        self,
        resources: dict[str, Any] | None = None,
        name: str = "radical_pilot",
        *,
        local_cores: int | None = None,
        raptor: dict[str, Any] | None = None,
        start_timeout: float = 600.0,
    ) -> None:
        super().__init__(name)
        desc = dict(resources or {})
        if desc.get("exit_on_error"):
            raise ValueError(
                "exit_on_error=True would SIGTERM this process when the pilot fails; RHAPSODY reports it as BackendError instead"
            )
        desc["exit_on_error"] = False
        desc.setdefault("resource", "local.localhost")
        desc.setdefault("runtime", 30)
        self._local = str(desc["resource"]).startswith("local.")
        self._local_cores = local_cores or envfix.real_cores()
        if self._local and "cores" not in desc and "nodes" not in desc:
            desc["cores"] = self._local_cores
        self._description = desc
        opts = {"workers": 1, "cores_per_worker": 1, "eager": False, **(raptor or {})}
        unknown = set(opts) - {"workers", "cores_per_worker", "eager"}
        if unknown:
            raise ValueError(f"unknown raptor option(s): {', '.join(sorted(unknown))}")
        self._raptor_opts = opts
        self._start_timeout = start_timeout

        self._rp: Any = None  # the radical.pilot module, imported at start
        self._session: Any = None
        self._pmgr: Any = None
        self._tmgr: Any = None
        self._pilot: Any = None
        self._raptor: Any = None
        self._raptor_lock: asyncio.Lock | None = None
        self._by_uid: dict[str, ComputeTask] = {}
        self._pilot_error: BackendError | None = None
        self._error_lock = threading.Lock()
        self._config_env: tuple[str, str | None] | None = None
        self._base: Path | None = None
        self._sid: str | None = None
        self.swept: list[int] = []  # pids the last shutdown had to kill itself

    # ------------------------------------------------------------------ info
    @property
    def pilot_description(self) -> dict[str, Any]:
        return dict(self._description)

    @property
    def rp_session(self) -> Any:
        """The ``radical.pilot.Session`` (None before start)."""
        return self._session

    @property
    def pilot(self) -> Any:
        return self._pilot

    def capacity(self) -> Resources | None:
        cores = self._description.get("cores")
        if not isinstance(cores, int) or cores < 1:
            return None
        gpus = self._description.get("gpus") or 0
        if gpus % cores:
            return None
        return Resources(ranks=cores, cores_per_rank=1, gpus_per_rank=gpus // cores)

    # ------------------------------------------------------------------ start
    async def _start(self) -> None:
        self._raptor_lock = asyncio.Lock()
        await asyncio.to_thread(self._start_blocking)
        if self._raptor_opts["eager"]:
            await self._ensure_raptor()

    def _start_blocking(self) -> None:
        base = self.work_dir.absolute() / f"radical.{self.name}"
        base.mkdir(parents=True, exist_ok=True)
        self._base = base
        (base / "stdio").mkdir(exist_ok=True)
        with envfix.ENV_LOCK:
            envfix.apply_process_env()
            if self._local and envfix.user_has_rp_config() is None:
                cfg = envfix.write_private_config(base / "config", self._local_cores, envfix.real_memory_mb())
                self._config_env = (envfix.CONFIG_ENV, os.environ.get(envfix.CONFIG_ENV))
                os.environ[envfix.CONFIG_ENV] = str(cfg)
            import radical.pilot as rp  # noqa: PLC0415 - the engine is imported only here

            self._rp = rp
            self._session = rp.Session(cfg={"base": str(base), "client_sandbox": str(base)})
        self._sid = self._session.uid
        self.log.info("radical.session", sid=self._sid, path=str(base))
        self._pmgr = rp.PilotManager(self._session)
        self._tmgr = rp.TaskManager(self._session)
        self._pmgr.register_callback(self._on_pilot_state)
        self._tmgr.register_callback(self._on_task_state)
        desc = dict(self._description)
        desc.setdefault("sandbox", str(base / "sandbox"))
        self._pilot = self._pmgr.submit_pilots(rp.PilotDescription(desc))
        self._tmgr.add_pilots(self._pilot)
        final = [rp.PMGR_ACTIVE, rp.FAILED, rp.CANCELED, rp.DONE]
        state = self._pilot.wait(state=final, timeout=self._start_timeout)
        if state != rp.PMGR_ACTIVE:
            if state not in final:
                raise BackendError(
                    f"pilot {self._pilot.uid} on {desc['resource']} did not become active within {self._start_timeout:g} s (state {state})"
                )
            raise self._pilot_failure(state)
        self.log.info("radical.pilot_active", pilot=self._pilot.uid, cores=desc.get("cores"))

    def _pilot_failure(self, state: str | None = None) -> BackendError:
        """The error every task of a dead pilot ends with (built once)."""
        with self._error_lock:
            if self._pilot_error is None:
                pilot = self._pilot
                state = state or (pilot.state if pilot is not None else "unknown")
                sandbox = envfix.url_path(getattr(pilot, "pilot_sandbox", None)) if pilot is not None else None
                text = envfix.agent_error_text(sandbox)
                died = envfix.agent_exit(sandbox)
                uid = pilot.uid if pilot is not None else "pilot"
                where = self._description.get("resource")
                message = f"RADICAL-Pilot pilot {uid} on {where} ended ({state})"
                message += f": {died}" if died else ""
                message += f": {text}" if text else f"; the agent left no error text in {sandbox}"
                self._pilot_error = BackendError(message)
            return self._pilot_error

    # ------------------------------------------------------------------ raptor
    async def _ensure_raptor(self) -> Any:
        assert self._raptor_lock is not None
        async with self._raptor_lock:
            if self._raptor is None:
                self._raptor = await asyncio.to_thread(self._start_raptor)
            return self._raptor

    def _start_raptor(self) -> Any:
        rp = self._rp
        (master,) = self._pilot.submit_raptors([rp.TaskDescription({"mode": rp.RAPTOR_MASTER})])
        workers = [
            rp.TaskDescription({"mode": rp.RAPTOR_WORKER, "ranks": 1, "cores_per_rank": int(self._raptor_opts["cores_per_worker"])})
            for _ in range(int(self._raptor_opts["workers"]))
        ]
        master.submit_workers(workers)
        self.log.info("radical.raptor_started", raptor=master.uid, workers=len(workers))
        return master

    # ------------------------------------------------------------------ submit
    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        if self._pilot_error is not None or self._pilot_is_final():
            error = self._pilot_failure()
            for task in tasks:
                self.report_failure(task, error)
            return
        executables = [t for t in tasks if isinstance(t, ComputeTask) and not t.is_function]
        functions = [t for t in tasks if isinstance(t, ComputeTask) and t.is_function]
        for task in tasks:
            self._by_uid[task.uid] = task  # type: ignore[assignment]
        if executables:
            await asyncio.to_thread(self._submit_executables, executables)
        if functions:
            raptor = await self._ensure_raptor()
            await asyncio.to_thread(self._submit_functions, raptor, functions)

    def _pilot_is_final(self) -> bool:
        rp, pilot = self._rp, self._pilot
        return pilot is not None and pilot.state in (rp.FAILED, rp.CANCELED, rp.DONE)

    def _common(self, task: ComputeTask) -> dict[str, Any]:
        res = task.resources
        desc: dict[str, Any] = {"uid": task.uid, "name": task.uid, "ranks": res.ranks, "cores_per_rank": res.cores_per_rank}
        if res.gpus_per_rank:
            desc["gpus_per_rank"] = res.gpus_per_rank
        if res.memory is not None:
            desc["mem_per_rank"] = math.ceil(res.memory / res.ranks / 2**20)
        return desc

    def _stdio_paths(self, task: ComputeTask) -> tuple[Path, Path]:
        if task.capture_stdio:
            return self.artifact_path(task, "out"), self.artifact_path(task, "err")
        assert self._base is not None
        return self._base / "stdio" / f"{task.uid}.out", self._base / "stdio" / f"{task.uid}.err"

    def _executable_description(self, task: ComputeTask) -> Any:
        extra = dict(task.task_backend_specific_kwargs)
        cwd, env = extra.pop("cwd", None), extra.pop("env", None)
        extra.pop("shell", None)
        executable, arguments = task.executable, list(task.arguments)
        assert executable is not None
        if task.runs_in_shell:
            executable, arguments = _SHELL, ["-c", task.shell_command]
        desc = self._common(task)
        out, err = self._stdio_paths(task)
        desc.update({"executable": executable, "arguments": arguments, "stdout": str(out), "stderr": str(err)})
        if env:
            desc["environment"] = {str(k): str(v) for k, v in env.items()}
        pre_exec = list(extra.pop("pre_exec", []) or [])
        if cwd is not None:
            pre_exec.insert(0, f"cd {shlex.quote(os.fspath(cwd))}")
        if pre_exec:
            desc["pre_exec"] = pre_exec
        desc.update(extra)
        return self._rp.TaskDescription(desc)

    def _submit_executables(self, tasks: list[ComputeTask]) -> None:
        self._tmgr.submit_tasks([self._executable_description(t) for t in tasks])

    def _submit_functions(self, raptor: Any, tasks: list[ComputeTask]) -> None:
        rp = self._rp
        descs = []
        for task in tasks:
            desc = self._common(task)
            extra = {k: v for k, v in task.task_backend_specific_kwargs.items() if k not in _OWN_KWARGS}
            env = task.task_backend_specific_kwargs.get("env")
            blob = remote.pack((task.function, tuple(task.args), dict(task.kwargs)))
            desc.update({"mode": rp.TASK_FUNCTION, "function": rp.PythonTask(remote.call, (blob,), {}), "raptor_id": raptor.uid})
            if env:
                desc["environment"] = {str(k): str(v) for k, v in env.items()}
            if task.timeout:
                desc["timeout"] = task.timeout  # raptor's own stop, in case RUNNING is never reported
            desc.update(extra)
            descs.append(rp.TaskDescription(desc))
        raptor.submit_tasks(descs)

    # ------------------------------------------------------------------ events (RP threads)
    def _on_pilot_state(self, pilot: Any, state: str, *_: Any) -> None:
        rp = self._rp
        if state not in (rp.FAILED, rp.CANCELED, rp.DONE) or self._lifecycle.value in ("SHUTTING_DOWN", "STOPPED"):
            return
        error = self._pilot_failure(state)
        self.log.error("radical.pilot_ended", pilot=pilot.uid, state=state, error=str(error)[:300])
        for task in list(self._by_uid.values()):
            self.report_failure(task, error)
        self._by_uid.clear()

    def _on_task_state(self, rp_task: Any, state: str, *_: Any) -> None:
        task = self._by_uid.get(rp_task.uid)
        if task is None:
            return
        rp = self._rp
        try:
            if state == rp.AGENT_EXECUTING or (state == rp.AGENT_SCHEDULING and task.is_function):
                # RP 1.103 publishes no executing state for raptor tasks: a
                # function counts as running once raptor has accepted it
                self.report_running(task)
            elif state == rp.DONE:
                self._by_uid.pop(task.uid, None)
                self._finish(task, rp_task)
            elif state == rp.FAILED:
                self._by_uid.pop(task.uid, None)
                self._fail(task, rp_task)
            elif state == rp.CANCELED:
                self._by_uid.pop(task.uid, None)
                self.report_canceled(task)
        except Exception as exc:  # noqa: BLE001 - never let a translation bug hang a task
            self.log.error("radical.callback_failed", task=task.uid, error=f"{type(exc).__name__}: {exc}")
            self.report_failure(task, BackendError(f"task {task.uid}: could not read RP's result ({type(exc).__name__}: {exc})"))

    def _stdio(self, task: ComputeTask, rp_task: Any) -> tuple[str | None, str | None]:
        if task.is_function:
            out, err = rp_task.stdout, rp_task.stderr
            if task.capture_stdio:
                po, pe = self.artifact_path(task, "out"), self.artifact_path(task, "err")
                po.write_text(out or "")
                pe.write_text(err or "")
                return str(po), str(pe)
            return out, err
        po, pe = self._stdio_paths(task)
        if task.capture_stdio:
            return str(po), str(pe)
        # RP keeps only the last 1 KiB of a task's output: read the files when we can
        texts = []
        for path, fallback in ((po, rp_task.stdout), (pe, rp_task.stderr)):
            try:
                texts.append(path.read_text(errors="replace"))
            except OSError:
                texts.append(fallback)
        return texts[0], texts[1]

    def _finish(self, task: ComputeTask, rp_task: Any) -> None:
        out, err = self._stdio(task, rp_task)
        if not task.is_function:
            self.report_result(task, exit_code=rp_task.exit_code, stdout=out, stderr=err)
            return
        outcome = remote.unpack(rp_task.return_value)
        if outcome[0] == "ok":
            self.report_result(task, return_value=outcome[1], stdout=out, stderr=err)
        else:
            _, exc, text = outcome
            self.report_failure(task, exc, stdout=out, stderr=(text or "") + (err or ""))

    def _fail(self, task: ComputeTask, rp_task: Any) -> None:
        reason = str(rp_task.exception or "")
        if "pilot died" in reason or self._pilot_is_final():
            self.report_failure(task, self._pilot_failure())
            return
        out, err = self._stdio(task, rp_task)
        if not task.is_function and rp_task.exit_code not in (None, 0):
            self.report_result(task, exit_code=rp_task.exit_code, stdout=out, stderr=err)
            return
        if task.is_function and task.timeout and "TimeoutError" in reason:
            self.report_failure(task, TaskTimeoutError(task.uid, task.timeout), stdout=out, stderr=err)
            return
        detail = rp_task.exception_detail or err or ""
        what = "function" if task.is_function else task.executable
        message = f"task {task.uid}: RADICAL-Pilot failed the {what}: {reason or 'no reason given'}"
        self.report_failure(
            task, TaskExecutionError(task.uid, message, rp_task.exit_code, err), exit_code=rp_task.exit_code, stdout=out, stderr=detail
        )

    # ------------------------------------------------------------------ cancel
    async def _cancel(self, task: BaseTask) -> bool:
        if self._tmgr is None:
            return False
        await asyncio.to_thread(self._tmgr.cancel_tasks, [task.uid])
        if isinstance(task, ComputeTask) and task.is_function and self._local:
            # RP 1.103 does not stop a function a raptor worker already runs:
            # end its dispatch process (named rp.dispatch.<uid>) ourselves
            await asyncio.to_thread(_kill_dispatch, task.uid)
        self._by_uid.pop(task.uid, None)
        return True

    # ------------------------------------------------------------------ stop
    async def _stop(self) -> None:
        await asyncio.to_thread(self._stop_blocking)

    def _stop_blocking(self) -> None:
        try:
            if self._raptor is not None and not self._pilot_is_final():
                _bounded(lambda: self._raptor.rpc("stop"), 15.0)
            if self._session is not None:
                self._session.close(terminate=True, download=False)
        finally:
            self._by_uid.clear()
            if self._sid and self._local:
                self.swept = envfix.sweep(self._sid)
                if self.swept:
                    self.log.warning("radical.swept", sid=self._sid, pids=self.swept)
            if self._config_env is not None:
                key, old = self._config_env
                with envfix.ENV_LOCK:
                    if old is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = old
                self._config_env = None


def _bounded(fn: Any, seconds: float) -> None:
    """Run ``fn`` in a daemon thread; give up waiting after ``seconds``."""
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


def _kill_dispatch(uid: str) -> None:
    import signal  # noqa: PLC0415

    import psutil  # noqa: PLC0415

    title = f"rp.dispatch.{uid}"
    for proc in psutil.process_iter():
        try:
            if " ".join(proc.cmdline()).strip() == title:
                os.kill(proc.pid, signal.SIGKILL)
        except (psutil.Error, OSError):
            continue
