"""What the cluster's workers offer, as last seen: the capacity one task may
ask for and the Dask worker resources (``CPU``, ``GPU``, ...) they advertise."""

from __future__ import annotations

import asyncio
from typing import Any

from rhapsody.engine.host import core_count, gpu_count
from rhapsody.resources import Capacity

#: seconds between two looks at the cluster's workers (an adaptive cluster grows and shrinks)
REFRESH_EVERY = 2.0


class WorkerView:
    """Refreshed from the scheduler every `REFRESH_EVERY` seconds.

    A task runs on one worker, all its ranks there, so the capacity is the
    largest worker's: its ``CPU`` resource if it advertises one (Dask enforces
    it), else the cores of its host; its ``GPU`` resource if it advertises
    one, else the GPUs its host has (`gpu_count`; unknown if any host cannot
    tell); its memory limit.
    None while the cluster has no workers (an adaptive cluster that has not
    scaled up yet): nothing can be ruled out then.
    """

    def __init__(self, client: Any, timeout: float, log: Any) -> None:
        self.client, self.timeout, self.log = client, timeout, log
        self.capacity: Capacity | None = None
        self.advertised: frozenset[str] = frozenset()
        self.count = 0
        self._host_cores: dict[str, int] = {}  # worker address -> cores of its host, asked once
        self._host_gpus: dict[str, int | None] = {}  # worker address -> GPUs of its host (None: cannot tell)

    async def refresh(self) -> None:
        info = await asyncio.wait_for(self.client.scheduler.identity(n_workers=-1), self.timeout)
        workers: dict[str, dict[str, Any]] = info.get("workers") or {}
        new = [address for address in workers if address not in self._host_cores]
        if new:
            answers = await asyncio.wait_for(self.client.run(_host_counts, workers=new, on_error="return"), self.timeout)
            for address, answer in answers.items():
                if isinstance(answer, (tuple, list)) and len(answer) == 2:  # a failed worker answers with its exception
                    self._host_cores[address], self._host_gpus[address] = answer
        for gone in set(self._host_cores) - set(workers):
            del self._host_cores[gone]
            self._host_gpus.pop(gone, None)
        cores = memory = 0
        gpus: int | None = 0
        advertised: set[str] = set()
        for address, w in workers.items():
            res = w.get("resources") or {}
            advertised.update(res)
            cores = max(cores, int(res.get("CPU", self._host_cores.get(address, w.get("nthreads", 1)))))
            gpus = _most_gpus(gpus, int(res["GPU"]) if "GPU" in res else self._host_gpus.get(address))
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


def _host_counts() -> tuple[int, int | None]:
    """Runs on a worker: the cores and GPUs of its host."""
    return core_count(), gpu_count()


def _most_gpus(so_far: int | None, worker: int | None) -> int | None:
    """The larger GPU count; unknown (None) as soon as one worker's is, since
    that worker may have more than any other."""
    return None if so_far is None or worker is None else max(so_far, worker)
