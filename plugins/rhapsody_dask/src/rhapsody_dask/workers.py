"""What the cluster's workers offer, as last seen: the capacity one task may
ask for and the Dask worker resources (``CPU``, ``GPU``, ...) they advertise."""

from __future__ import annotations

import asyncio
from typing import Any

from rhapsody.engine.host import core_count
from rhapsody.resources import Capacity

#: seconds between two looks at the cluster's workers (an adaptive cluster grows and shrinks)
REFRESH_EVERY = 2.0


class WorkerView:
    """Refreshed from the scheduler every `REFRESH_EVERY` seconds.

    A task runs on one worker, all its ranks there, so the capacity is the
    largest worker's: its ``CPU`` resource if it advertises one (Dask enforces
    it), else the cores of its host; its ``GPU`` resource; its memory limit.
    None while the cluster has no workers (an adaptive cluster that has not
    scaled up yet): nothing can be ruled out then.
    """

    def __init__(self, client: Any, timeout: float, log: Any) -> None:
        self.client, self.timeout, self.log = client, timeout, log
        self.capacity: Capacity | None = None
        self.advertised: frozenset[str] = frozenset()
        self.count = 0
        self._host_cores: dict[str, int] = {}  # worker address -> cores of its host, asked once

    async def refresh(self) -> None:
        info = await asyncio.wait_for(self.client.scheduler.identity(n_workers=-1), self.timeout)
        workers: dict[str, dict[str, Any]] = info.get("workers") or {}
        new = [address for address, w in workers.items() if address not in self._host_cores and "CPU" not in (w.get("resources") or {})]
        if new:
            answers = await asyncio.wait_for(self.client.run(core_count, workers=new, on_error="return"), self.timeout)
            self._host_cores.update({a: n for a, n in answers.items() if isinstance(n, int)})
        for gone in set(self._host_cores) - set(workers):
            del self._host_cores[gone]
        cores = gpus = memory = 0
        advertised: set[str] = set()
        for address, w in workers.items():
            res = w.get("resources") or {}
            advertised.update(res)
            cores = max(cores, int(res.get("CPU", self._host_cores.get(address, w.get("nthreads", 1)))))
            gpus = max(gpus, int(res.get("GPU", 0)))
            memory = max(memory, int(w.get("memory_limit") or 0))
        self.count, self.advertised = len(workers), frozenset(advertised)
        self.capacity = Capacity.node(max(cores, 1), gpus, memory or None) if workers else None

    async def keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the last known view
                self.log.debug("dask.refresh_failed", error=f"{type(exc).__name__}: {exc}")
