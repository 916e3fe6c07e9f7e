"""What runs on each node of the Dragon runtime for telemetry: one small
long-lived process (placed there by `rhapsody_dragon.node_samplers`) that
reads its node through core's `LocalNodeSampler` (psutil) whenever asked.

Imports no Dragon; its two queues arrive as arguments, with the name Dragon
placed it by. Messages in: a round number (answer it) or ``None`` (stop).
Answers out: ``(round, placed_on, pid, samples)``, or ``(round, placed_on,
pid, error text)`` when psutil failed, so the client never waits in vain for
a node that is up. The samples' node id is the host's own name
(``socket.gethostname()``), the name ``task.worker`` carries; Dragon's name
for a node may differ (``localhost`` on a one-node runtime).
"""

from __future__ import annotations

import os
from typing import Any

from rhapsody.engine.sampling import LocalNodeSampler


def serve(inbox: Any, outbox: Any, placed_on: str) -> None:
    """Answer sample requests until ``None`` arrives. The inbox is read with a
    blocking ``get``: this process has nothing else to do, and a timed get
    would spin (Dragon's timed gets busy-wait) and cost the node CPU."""
    sampler = LocalNodeSampler()  # this host's name; primes the CPU and I/O counters: the first answer measures since now
    pid = os.getpid()
    while True:
        request = inbox.get()
        if request is None:
            return
        outbox.put((request, placed_on, pid, _read(sampler)))


def _read(sampler: LocalNodeSampler) -> Any:
    try:
        return sampler.sample()
    except Exception as exc:  # noqa: BLE001 - reported to the client, which logs it; the process lives on
        return f"{type(exc).__name__}: {exc}"
