"""The rhapsody-py Dask example's shape: a backend that starts its own
LocalCluster, sync and async functions and executables, results read back."""

import asyncio
import sys

from rhapsody.api import ComputeTask, Session
from rhapsody.backends import DaskExecutionBackend


def square(n):
    import time

    time.sleep(0.05)
    print(f"square {n}")
    return {"input": n, "result": n * n}


async def cube(n):
    import asyncio

    await asyncio.sleep(0.05)
    print(f"cube {n}")
    print(f"cube warning {n}", file=sys.stderr)
    return {"input": n, "result": n**3}


async def main():
    async with DaskExecutionBackend(resources={"n_workers": 2, "threads_per_worker": 2}) as backend:
        session = Session(backends=[backend])
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(10)]
        tasks += [ComputeTask(function=cube, args=(i,)) for i in range(10)]
        tasks += [ComputeTask(executable="/bin/echo", arguments=[f"task {i}"]) for i in range(10)]
        async with session:
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks)
        print(f"backend {backend.name}")

    done = sum(1 for t in tasks if t.state == "DONE")
    failed = sum(1 for t in tasks if t.state == "FAILED")
    print(f"Done: {done}, Failed: {failed}")
    squares = [t.return_value["result"] for t in tasks[:10]]
    cubes = [t.return_value["result"] for t in tasks[10:20]]
    echoes = [t.stdout.strip() for t in tasks[20:]]
    print(f"squares {squares}")
    print(f"cubes {cubes}")
    print(f"echoes ok {echoes == [f'task {i}' for i in range(10)]}")
    print(f"printed ok {[t.stdout for t in tasks[:10]] == [f'square {i}' + chr(10) for i in range(10)]}")
    print(
        f"cube output ok {all(t.stdout == f'cube {i}' + chr(10) and f'cube warning {i}' in t.stderr for i, t in enumerate(tasks[10:20]))}"
    )


if __name__ == "__main__":
    asyncio.run(main())
