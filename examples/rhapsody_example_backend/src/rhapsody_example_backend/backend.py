"""Each RHAPSODY task becomes one asyncio task: functions run in worker threads,
executables as local processes. A semaphore stands in for the engine's slots."""

from __future__ import annotations

import asyncio

from rhapsody import Backend, Capacity
from rhapsody.engine import call_function
from rhapsody.engine.process import Command


class InlineEngine:
    engine_name = "asyncio_inline"

    def __init__(self, slots: int) -> None:
        self.slots, self.jobs = slots, {}

    def capacity(self):
        return Capacity.node(self.slots)

    async def start(self, context) -> None:
        self.gate = asyncio.Semaphore(self.slots)

    async def submit(self, handles) -> None:
        for handle in handles:
            self.jobs[handle.uid] = asyncio.ensure_future(self.run(handle))

    async def run(self, handle) -> None:
        try:
            async with self.gate:  # waits here while every slot is busy
                if handle.launch is None:  # a function
                    task = handle.task
                    handle.running()
                    handle.finish(await asyncio.to_thread(call_function, task.function, task.args, task.kwargs))
                    return
                command = handle.engine_data = Command(handle.launch)
                failure = command.start()  # a program that cannot start fails here, with exit code 127/126
                if failure is None:
                    handle.running()
                handle.finish(failure or await command.wait_async())
        finally:
            self.jobs.pop(handle.uid, None)

    async def cancel(self, handle) -> bool:
        if isinstance(handle.engine_data, Command):
            handle.engine_data.stop()  # SIGTERM the process groups, SIGKILL after a grace period
            return True
        job = self.jobs.get(handle.uid)
        if job is None:
            return False
        job.cancel()  # queued: never starts; a running thread's late result is dropped by core
        return True

    async def stop(self) -> None:
        """Nothing to release: core cancelled every task still in flight."""


class InlineBackend(Backend):
    def __init__(self, name: str = "asyncio_inline", slots: int = 2) -> None:
        super().__init__(InlineEngine(slots), name)
