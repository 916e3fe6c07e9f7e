"""Plain-python program: Dragon backends started and stopped one after the
other in one process, in the order given on the command line (v1, v2, v3),
each running a function and an executable. ``--leave-open`` leaves the last
backend running at exit. Prints what it saw; the test checks it."""

import asyncio
import sys
from pathlib import Path

from rhapsody import ComputeTask, Session
from rhapsody.testing import tasks as fn
from rhapsody_dragon import DragonBatchExecutionBackend, DragonPoolExecutionBackend, DragonProcessExecutionBackend

MAKERS = {"v1": DragonProcessExecutionBackend, "v2": DragonPoolExecutionBackend, "v3": DragonBatchExecutionBackend}


def segments_mapped_here() -> list[str]:
    """The /dev/shm segments this process has mapped: the runtime's."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in lines if "/dev/shm/" in line})


async def run_one(i: int, version: str) -> None:
    backend = MAKERS[version](name=f"{version}-{i}", num_workers=1)
    async with Session([backend]) as session:
        tasks = [ComputeTask(function=fn.add, args=(i, 100)), ComputeTask(executable="/bin/echo", arguments=[f"exe-{i}"])]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=300)
        print(f"RUN {i} {version} {tasks[0].state.value} {tasks[0].return_value} {tasks[1].stdout.strip()}", flush=True)
        if i == 0:
            print("SEGMENTS", " ".join(segments_mapped_here()), flush=True)


async def leave_open(version: str) -> None:
    backend = await MAKERS[version](name="left-open", num_workers=1)
    task = (await backend.submit_tasks([ComputeTask(function=fn.add, args=(1, 2))]))[0]
    await asyncio.wait_for(asyncio.shield(task), 300)
    print(f"OPEN {version} {task.return_value}", flush=True)


async def main(order: list[str]) -> None:
    for i, version in enumerate(v for v in order if v != "--leave-open"):
        await run_one(i, version)
    if "--leave-open" in order:
        await leave_open(order[-2])


asyncio.run(main(sys.argv[1:]))
print("END", flush=True)
