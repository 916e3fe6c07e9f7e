"""Small real engines and helpers shared by the core tests.

`AsyncioEngine` is a complete engine whose engine is the running event loop:
executables run through `rhapsody.engine.process.Command`, ``async def``
functions as asyncio tasks, plain functions in a worker thread. `ManualEngine`
is an engine that is the test itself: it keeps the handles it is given and the
test reports what the "engine" did through them, exactly as a plugin does with
its engine's events. Both use only the public engine contract.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rhapsody import Backend, Capacity, hookimpl
from rhapsody.engine import EngineContext, TaskHandle, call_function
from rhapsody.engine.calls import call_function_async
from rhapsody.engine.process import Command
from rhapsody.states import TaskState


class AsyncioEngine:
    engine_name = "asyncio"

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores
        self.started = self.stopped = 0
        self.jobs: set[asyncio.Task[None]] = set()

    def capacity(self) -> Capacity | None:
        return None if self.cores is None else Capacity.node(self.cores)

    async def start(self, context: EngineContext) -> None:
        self.started += 1

    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        for handle in handles:
            job = asyncio.ensure_future(self._run(handle))
            handle.engine_data = job
            self.jobs.add(job)
            job.add_done_callback(self.jobs.discard)

    async def _run(self, handle: TaskHandle) -> None:
        if handle.launch is not None:
            command = Command(handle.launch)
            failure = command.start()
            if failure is not None:
                handle.finish(failure)
                return
            handle.running()
            try:
                handle.finish(await command.wait_async())
            except asyncio.CancelledError:
                command.stop(0.5)
                await asyncio.to_thread(command.wait)
            return
        task: Any = handle.task
        handle.running()
        if inspect.iscoroutinefunction(task.function):
            outcome = await call_function_async(task.function, task.args, task.kwargs)
        else:
            outcome = await asyncio.to_thread(call_function, task.function, task.args, task.kwargs)
        handle.finish(outcome)

    async def cancel(self, handle: TaskHandle) -> bool:
        job = handle.engine_data
        if job is None or job.done():
            return False
        job.cancel()
        return True

    async def stop(self) -> None:
        self.stopped += 1
        if self.jobs:
            await asyncio.wait(list(self.jobs), timeout=10)


class ManualEngine:
    """Accepts tasks and does nothing on its own: the test plays the engine
    through ``handles``. ``cancel_mode`` says what `cancel` does."""

    engine_name = "manual"

    def __init__(self) -> None:
        self.handles: dict[str, TaskHandle] = {}
        self.received: list[str] = []
        self.cancel_mode = "stopped"
        self.cancel_calls: list[str] = []
        self.context: EngineContext | None = None

    def capacity(self) -> Capacity | None:
        return None

    async def start(self, context: EngineContext) -> None:
        self.context = context

    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        for handle in handles:
            self.handles[handle.uid] = handle
            self.received.append(handle.uid)

    async def cancel(self, handle: TaskHandle) -> bool:
        assert handle.cancel_requested, "an engine asked to cancel sees that core wants the task stopped"
        self.cancel_calls.append(handle.uid)
        await asyncio.sleep(0)
        mode = self.cancel_mode
        if mode == "stopped":
            return True
        if mode == "refused":
            return False
        if mode == "kill_reports_failure":  # the engine reports the kill as a failure
            handle.failed(RuntimeError("killed by signal 15"), exit_code=-15)
            return True
        if mode == "finished_first":  # the task completed before the cancel landed
            handle.done("late", exit_code=0)
            return False
        if mode == "raises":
            raise RuntimeError("engine cannot cancel")
        raise AssertionError(mode)

    async def stop(self) -> None:
        pass


def manual_backend(name: str = "manual") -> tuple[Backend, ManualEngine]:
    engine = ManualEngine()
    return Backend(engine, name), engine


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
