"""Small real backends and helpers shared by the core tests.

`AsyncioBackend` is a complete backend whose engine is the running event loop:
``async def`` functions run as asyncio tasks, plain functions in a worker thread
(``asyncio.to_thread``). `ManualBackend` is a backend whose engine is the test
itself: it accepts tasks and the test reports what the "engine" did, which is
exactly what a plugin does with its engine's events.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rhapsody import hookimpl
from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.resources import Resources
from rhapsody.states import TaskState
from rhapsody.task import BaseTask


class AsyncioBackend(BaseExecutionBackend):
    def __init__(self, name: str = "asyncio", *, cores: int | None = None) -> None:
        super().__init__(name)
        self._cores = cores
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self.started = self.stopped = 0

    def capacity(self) -> Resources | None:
        return None if self._cores is None else Resources(ranks=1, cores_per_rank=self._cores)

    async def _start(self) -> None:
        self.started += 1

    async def _stop(self) -> None:
        self.stopped += 1

    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        for task in tasks:
            self._jobs[task.uid] = asyncio.ensure_future(self._run(task))

    async def _run(self, task: Any) -> None:
        self.report_running(task)
        try:
            if task.function is None:
                proc = await asyncio.create_subprocess_exec(
                    task.executable, *task.arguments, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
                )
                try:
                    out, err = await proc.communicate()
                except asyncio.CancelledError:
                    proc.kill()
                    await proc.wait()
                    raise
                self.report_result(task, exit_code=proc.returncode, stdout=out.decode(), stderr=err.decode())
                return
            if inspect.iscoroutinefunction(task.function):
                value = await task.function(*task.args, **task.kwargs)
            else:
                value = await asyncio.to_thread(task.function, *task.args, **task.kwargs)
        except asyncio.CancelledError:
            self.report_canceled(task)
        except Exception as exc:
            self.report_failure(task, exc)
        else:
            self.report_result(task, return_value=value)
        finally:
            self._jobs.pop(task.uid, None)

    async def _cancel(self, task: BaseTask) -> bool:
        job = self._jobs.get(task.uid)
        if job is None:
            return False
        job.cancel()
        return True


class ManualBackend(BaseExecutionBackend):
    """Accepts tasks and does nothing on its own: the test plays the engine."""

    def __init__(self, name: str = "manual") -> None:
        super().__init__(name)
        self.received: list[BaseTask] = []
        self.cancel_mode = "stopped"  # what _cancel does, set by the test
        self.cancel_calls: list[str] = []

    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        self.received.extend(tasks)

    async def _cancel(self, task: BaseTask) -> bool:
        self.cancel_calls.append(task.uid)
        await asyncio.sleep(0)
        mode = self.cancel_mode
        if mode == "stopped":
            return True
        if mode == "refused":
            return False
        if mode == "kill_reports_failure":  # the engine reports the kill as a failure
            self.report_failure(task, RuntimeError("killed by signal 15"), exit_code=-15)
            return True
        if mode == "finished_first":  # the task completed before the cancel landed
            self.report_result(task, return_value="late", exit_code=0)
            return False
        if mode == "raises":
            raise RuntimeError("engine cannot cancel")
        raise AssertionError(mode)


class Recorder:
    """An observer plugin: records every hook call."""

    def __init__(self) -> None:
        self.transitions: list[tuple[str, str, TaskState, TaskState]] = []
        self.submits: list[tuple[str, list[str]]] = []
        self.cancels: list[tuple[str, str, str]] = []

    @hookimpl
    def rhapsody_task_state_changed(self, backend: Any, task: Any, old_state: TaskState, new_state: TaskState) -> None:
        # the hook is called after the task was updated
        assert task.state is new_state
        self.transitions.append((task.uid, backend.name, old_state, new_state))

    @hookimpl
    def rhapsody_task_submit(self, backend: Any, tasks: Sequence[Any]) -> None:
        self.submits.append((backend.name, [t.uid for t in tasks]))

    @hookimpl
    def rhapsody_task_cancel(self, backend: Any, task: Any, reason: str) -> None:
        self.cancels.append((task.uid, backend.name, reason))

    def states_of(self, uid: str) -> list[str]:
        return [new.value for u, _, _, new in self.transitions if u == uid]


def run(coro: Any, deadline: float = 60.0) -> Any:
    """Drive one coroutine to the end on a fresh loop; the deadline only guards against hangs."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, deadline)

    return asyncio.run(bounded())


# ---------------------------------------------------------------- processes
def children_of_this_process() -> set[int]:
    """Live (non-zombie) direct children of this process, over all its threads."""
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                pids.update(int(p) for p in fh.read().split())
        except OSError:
            continue
    return {p for p in pids if pid_alive(p)}


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (a generous deadline only guards against hangs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- distributions
PLUGIN_MODULE = """\
from rhapsody import BackendRecord, hookimpl

@hookimpl
def rhapsody_register_backends():
    return [{records}]

def engine_problem():
    return {problem!r}
"""


def write_distribution(
    root: Path,
    dist: str,
    entry_points: dict[str, str],
    modules: dict[str, str],
    version: str = "0.1",
) -> None:
    """A real installed distribution: ``<dist>-<version>.dist-info`` with
    METADATA and entry_points.txt, plus its top-level modules, under ``root``."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[rhapsody.backends]", *(f"{name} = {target}" for name, target in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


def plugin_source(module: str, *records: tuple[str, str], problem: str | None = None) -> str:
    """Source of plugin module ``module`` registering ``(backend name, class path)``
    records whose engine check answers ``problem``."""
    text = ", ".join(
        f"BackendRecord(name={n!r}, backend_class={c!r}, summary='test backend {n}', engine_check='{module}:engine_problem')"
        for n, c in records
    )
    return PLUGIN_MODULE.format(records=text, problem=problem)
