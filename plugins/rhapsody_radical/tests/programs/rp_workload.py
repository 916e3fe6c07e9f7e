"""rhapsody-py 0.6's RADICAL-Pilot shapes: RadicalExecutionBackend(resources,
raptor_config) with a local pilot, executables and Python functions (through
raptor) in one session, results and printed output read back."""

import asyncio
import sys

from rhapsody.api import ComputeTask, Session
from rhapsody.backends import RadicalExecutionBackend


def square(n):
    print(f"square {n}")
    return n * n


async def shout(word):
    await asyncio.sleep(0.05)
    print(word.upper())
    print(f"about {word}", file=sys.stderr)
    return len(word)


def broken():
    raise ValueError("broken on purpose")


async def main():
    resources = {"resource": "local.localhost", "runtime": 15, "cores": 4}
    raptor_config = {"masters": [{"ranks": 1, "workers": [{"ranks": 1, "worker_type": "DefaultWorker"}]}]}
    backend = await RadicalExecutionBackend(resources, raptor_config)
    print(f"backend {backend.name}")
    session = Session(backends=[backend])
    tasks = [ComputeTask(executable="/bin/echo", arguments=[f"exe {i}"]) for i in range(4)]
    tasks += [ComputeTask(function=square, args=(i,)) for i in range(6)]
    tasks += [ComputeTask(function=shout, args=(w,)) for w in ("alpha", "beta", "gamma")]
    bad = ComputeTask(function=broken)
    async with session:
        futures = await session.submit_tasks([*tasks, bad])
        results = await asyncio.gather(*futures, return_exceptions=True)
    print(f"states {sorted({t.state for t in tasks})} bad {bad.state}")
    print(f"bad raised {type(results[-1]).__name__}: {results[-1]}")
    print(f"exe out {[t.stdout.strip() for t in tasks[:4]]}")
    print(f"squares {[t.return_value for t in tasks[4:10]]}")
    print(f"square prints {[t.stdout.strip() for t in tasks[4:10]]}")
    print(f"shout prints {[t.stdout.strip() for t in tasks[10:]]}")
    print(f"shout stderr {[t.stderr.strip() for t in tasks[10:]]}")
    print(f"lengths {[t.return_value for t in tasks[10:]]}")


if __name__ == "__main__":
    asyncio.run(main())
