"""RHAPSODY in one screen: executables, sync and async Python functions, a
failure, a timeout and a cancellation, on the default local backend.

    python examples/demo.py              # needs rhapsody-core + rhapsody-concurrent
    RHAPSODY_LOG_LEVEL=DEBUG python examples/demo.py   # every state transition
"""

from __future__ import annotations

import asyncio
import math
import time

from rhapsody import ComputeTask, Resources, Session, TaskExecutionError, TaskState


def integrate(n: int) -> float:
    """Midpoint rule for 4/(1+x^2) on [0, 1]: pi, the slow way."""
    h = 1.0 / n
    return h * sum(4.0 / (1.0 + ((i + 0.5) * h) ** 2) for i in range(n))


async def fetch_and_scale(value: float, factor: float) -> float:
    await asyncio.sleep(0.05)  # stands in for I/O: a service call, a file read
    return value * factor


async def main() -> None:
    t0 = time.perf_counter()
    async with Session() as session:  # no backends named: the embedded default...
        await session.start()  # ...joins here (or at the first task), unless add_backend came first
        backend = next(iter(session.backends.values()))
        print(f"session {session.uid} on backend {backend.name!r}; artifacts in {session.work_dir}")

        pis = [ComputeTask(function=integrate, args=(200_000 + i,)) for i in range(4)]
        scaled = [ComputeTask(function=fetch_and_scale, args=(float(i), 2.5)) for i in range(8)]
        commands = [
            ComputeTask(executable="/bin/echo", arguments=["hello from", "an executable"]),
            ComputeTask(executable="uname -s | tr a-z A-Z"),  # a whole command line runs through the shell
            ComputeTask(executable="/bin/sh", arguments=["-c", "echo half-way; exit 4"]),  # fails on purpose
        ]
        slow = ComputeTask(executable="/bin/sleep", arguments=["30"], timeout=1.0)
        doomed = ComputeTask(executable="/bin/sleep", arguments=["30"])
        wide = ComputeTask(executable="/bin/true", resources=Resources(cores_per_rank=4096))  # can never fit

        everything = [*pis, *scaled, *commands, slow, doomed, wide]
        await session.submit_tasks(everything)
        await asyncio.sleep(0.3)
        await session.cancel_tasks([doomed])
        await session.wait_tasks(everything)

        print(f"\npi estimates: {[round(t.return_value, 8) for t in pis]} (math.pi = {math.pi:.8f})")
        print(f"async results: {[t.return_value for t in scaled]}")
        for t in commands:
            print(f"{t.executable!r:>28} -> {t.state.value:<6} exit={t.exit_code} stdout={t.stdout.strip()!r}")
        try:
            await commands[-1]
        except TaskExecutionError as exc:
            print(f"awaiting the failed command raises TaskExecutionError: {exc}")
        for t, why in ((slow, "timeout=1s"), (doomed, "cancelled"), (wide, "4096 cores asked")):
            print(f"{why:>16}: {t.state.value:<8} {type(t.exception).__name__ if t.exception else ''} {t.exception or ''}")

        counts: dict[str, int] = {}
        for t in everything:
            counts[t.state.value] = counts.get(t.state.value, 0) + 1
        print(f"\n{len(everything)} tasks in {time.perf_counter() - t0:.2f} s: {counts}")
        assert all(t.state is TaskState.DONE for t in pis + scaled + commands[:2])


if __name__ == "__main__":
    asyncio.run(main())
