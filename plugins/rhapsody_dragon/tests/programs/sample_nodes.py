"""Plain-python program: a Dragon V2 backend (the program starts the runtime
itself) samples the runtime's nodes twice. Prints the runtime's nodes, the
samples, its own pid and the pids of the sampler processes that answered
(from their ``node_sampler.ready`` log events) as JSON. ``--die``: SIGKILLs
itself afterwards, backend open; otherwise stops the backend and prints
which sampler processes are still there."""

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import attrs

from rhapsody_dragon import DragonPoolExecutionBackend


class ReadyEvents(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict) and record.msg.get("event") == "node_sampler.ready":
            self.events.append(dict(record.msg))


def show(key: str, value: object) -> None:
    print(key, json.dumps(value), flush=True)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def main(die: bool) -> None:
    ready = ReadyEvents()
    logger = logging.getLogger("rhapsody")
    logger.setLevel(logging.INFO)
    logger.addHandler(ready)
    backend = await DragonPoolExecutionBackend(name="sampled", num_workers=1)
    from dragon.native.machine import Node, System

    show("NODES", [Node(h_uid).hostname for h_uid in System().nodes])
    maps = Path("/proc/self/maps").read_text().splitlines()
    print("SEGMENTS", " ".join(sorted({line.split()[-1] for line in maps if "/dev/shm/" in line})), flush=True)
    rounds = [await backend.sample_resources(timeout=300) for _ in range(2)]
    show("SAMPLES", [[attrs.asdict(s) for s in r] for r in rounds])
    pids = [e["pid"] for e in ready.events]
    show("SAMPLERS", {"me": os.getpid(), "samplers": pids, "ready": ready.events})
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    await backend.shutdown()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    show("LEFT", [pid for pid in pids if alive(pid)])


asyncio.run(main("--die" in sys.argv[1:]))
print("END", flush=True)
