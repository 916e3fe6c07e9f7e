"""Finished Dask futures, collected a window at a time.

Fetching a result is a round trip through the scheduler to a worker; one
``Client.gather`` of many futures costs about as much as one of a single
future. So when a future finishes while others are still in flight, the
collector waits `GATHER_WINDOW` for more to finish and hands them over
together. It holds a future only until it has handed it over: nothing of a
finished task stays referenced here (Dask keeps a key's data while any client
holds its future).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

#: seconds the collector waits for more results before a gather while other tasks are in flight
GATHER_WINDOW = 0.02
#: seconds one gather may take before its tasks fail (a result that can no longer be fetched)
GATHER_TIMEOUT = 300.0

Deliver = Callable[[list[Any]], Awaitable[None]]


class Collector:
    """Calls ``deliver(futures)`` with batches of finished (or erred, or
    cancelled) futures, as they finish.

    Each future gets a small task on the client's loop that awaits the future's
    own state (``Future._state.wait()``, what distributed's ``wait`` and
    ``as_completed`` await inside). ``as_completed.add`` would cost a
    thread-safe loop callback per future, a self-pipe write each: 3-4 % of a
    stream of no-op tasks on two cores, where the scheduler shares this process.
    """

    def __init__(self, deliver: Deliver, log: Any) -> None:
        self.deliver, self.log = deliver, log
        self._watchers: set[asyncio.Task[None]] = set()
        self._pending = 0  # futures added and not finished yet
        self._ready: list[Any] = []
        self._some = asyncio.Event()  # set while _ready holds futures
        self._loop = asyncio.get_running_loop()  # made on it, by the engine's start

    def add(self, future: Any) -> None:
        self._pending += 1
        watcher = self._loop.create_task(self._watch(future))  # (not ensure_future: it asks the kernel for the pid)
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, future: Any) -> None:
        try:
            await future._state.wait()
        finally:
            self._pending -= 1
        self._ready.append(future)
        self._some.set()

    def clear(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        self._watchers.clear()
        self._ready.clear()

    async def run(self) -> None:
        while True:
            await self._some.wait()
            if self._pending:  # others are in flight: let a few more finish first
                await asyncio.sleep(GATHER_WINDOW)
            batch, self._ready = self._ready, []
            self._some.clear()
            try:
                await self.deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never let the collector die
                self.log.error("dask.collect_failed", tasks=len(batch), error=f"{type(exc).__name__}: {exc}")
            del batch  # not held while waiting for the next one


async def gather(client: Any, futures: list[Any]) -> list[tuple[Any, BaseException | None]]:
    """``(value, None)`` or ``(None, why)`` per future, fetched in one round
    trip when they all can be, else one by one."""
    try:
        values = await asyncio.wait_for(client.gather(futures), GATHER_TIMEOUT)
        return [(v, None) for v in values]
    except Exception:  # noqa: BLE001 - one bad result: fetch them one by one to tell which
        pass
    results: list[tuple[Any, BaseException | None]] = []
    for future in futures:
        try:
            results.append((await asyncio.wait_for(future, GATHER_TIMEOUT), None))
        except Exception as exc:  # noqa: BLE001
            results.append((None, exc))
    return results
