"""Client-side pieces shared by V1, V2 and V3: importing Dragon lazily, owning
a runtime when the program was not started by the ``dragon`` launcher, and
turning a RHAPSODY executable task into an argv."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cloudpickle

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.errors import TaskExecutionError
from rhapsody.task import BaseTask, ComputeTask

INSTALL_HINT = "pip install 'dragonhpc[telemetry,batch]'"

# Keys of task_backend_specific_kwargs this plugin interprets itself.
OWN_KEYS = frozenset({"cwd", "env", "shell", "process_template", "process_templates", "policy"})


def import_dragon() -> Any:
    """Import Dragon or raise an ImportError that names the package to install."""
    try:
        import dragon  # noqa: PLC0415
        import dragon.native.process  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"the Dragon backends of RHAPSODY need the `dragonhpc` package ({exc}); {INSTALL_HINT}") from exc
    return dragon


class _Runtime:
    """One Dragon runtime per process, shared by every Dragon backend in it.
    Under the ``dragon`` launcher it is already there; from plain ``python``
    the first backend starts a ``LocalRuntime`` and the last one stops it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._owned: Any = None

    def acquire(self, timeout: float = 120.0) -> None:
        dragon = import_dragon()
        with self._lock:
            if self._users == 0 and self._owned is None and not dragon.in_dragon():
                from dragon.workflows.runtime import LocalRuntime  # noqa: PLC0415

                self._owned = LocalRuntime.start(timeout=timeout)
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._owned is not None:
                owned, self._owned = self._owned, None
                owned.stop()

    @property
    def owned(self) -> bool:
        return self._owned is not None


RUNTIME = _Runtime()


def pack_function(task: ComputeTask) -> bytes:
    return cloudpickle.dumps((task.function, tuple(task.args), dict(task.kwargs)))


def unpack_result(status: str, data: bytes) -> Any:
    return cloudpickle.loads(data)


def command_of(task: ComputeTask) -> tuple[list[str], str | None, dict[str, str]]:
    """(argv, cwd, env overrides) of an executable task, by the shared conventions."""
    kw = task.task_backend_specific_kwargs
    exe = task.executable or ""
    argv = ["/bin/sh", "-c", task.shell_command] if task.runs_in_shell else [exe, *task.arguments]
    env = {str(k): str(v) for k, v in (kw.get("env") or {}).items()}
    cwd = kw.get("cwd")
    return argv, (os.fspath(cwd) if cwd else None), env


def missing_executable(argv: list[str], cwd: str | None, env: dict[str, str]) -> str | None:
    """Why ``argv[0]`` cannot be started, or None."""
    exe = argv[0]
    if os.sep in exe:
        path = Path(cwd or os.getcwd()) / exe
        if not path.is_file():
            return f"executable {exe!r} not found"
        if not os.access(path, os.X_OK):
            return f"executable {exe!r} is not executable"
        return None
    search = env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(exe, path=search) is None:
        return f"executable {exe!r} not found on PATH"
    return None


def resolve(argv: list[str], cwd: str | None, env: dict[str, str]) -> list[str]:
    if os.sep in argv[0]:
        return argv
    found = shutil.which(argv[0], path=env.get("PATH", os.environ.get("PATH", os.defpath)))
    return [found or argv[0], *argv[1:]]


class DragonBackendBase(BaseExecutionBackend):
    """What every Dragon backend shares: the runtime, result delivery."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._runtime_held = False

    async def _acquire_runtime(self) -> None:
        import asyncio  # noqa: PLC0415

        import_dragon()
        await asyncio.to_thread(RUNTIME.acquire)
        self._runtime_held = True

    async def _release_runtime(self) -> None:
        import asyncio  # noqa: PLC0415

        if self._runtime_held:
            self._runtime_held = False
            await asyncio.to_thread(RUNTIME.release)

    def startable(self, tasks: Sequence[BaseTask]) -> list[ComputeTask]:
        """The tasks worth handing to Dragon: an executable that cannot be found
        fails on its own here, never the whole batch."""
        ok = []
        for task in tasks:
            assert isinstance(task, ComputeTask)
            if not task.is_function:
                why = missing_executable(*command_of(task))
                if why is not None:
                    self.fail_missing(task, why)
                    continue
            ok.append(task)
        return ok

    def fail_missing(self, task: BaseTask, why: str) -> None:
        message = f"task {task.uid}: {why}"
        self.report_failure(task, TaskExecutionError(task.uid, message, None, message), stderr=message)

    def deliver_function(self, task: BaseTask, status: str, data: bytes, tb: str | None) -> None:
        try:
            value = cloudpickle.loads(data)
        except Exception as exc:  # noqa: BLE001
            self.report_failure(task, exc)
            return
        if status == "ok":
            self.report_result(task, return_value=value)
        else:
            self.report_failure(task, value, stderr=tb)

    def deliver_command(self, task: BaseTask, exit_code: int | None, out: str, err: str) -> None:
        """Finish an executable task, writing capture files when asked."""
        stdout, stderr = out, err
        if isinstance(task, ComputeTask) and task.capture_stdio:
            out_path, err_path = self.artifact_path(task, "out"), self.artifact_path(task, "err")
            if not (out_path.exists() and out_path.read_text(errors="replace") == out):
                out_path.write_text(out)
            if not (err_path.exists() and err_path.read_text(errors="replace") == err):
                err_path.write_text(err)
            stdout, stderr = str(out_path), str(err_path)
        if exit_code is None:
            message = f"task {task.uid}: {err.strip() or 'the executable could not be started'}"
            self.report_failure(task, TaskExecutionError(task.uid, message, None, err), stdout=stdout, stderr=stderr)
            return
        self.report_result(task, exit_code=exit_code, stdout=stdout, stderr=stderr)
