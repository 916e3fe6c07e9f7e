"""Dask: raw ``Client.submit`` against RHAPSODY's DaskExecutionBackend, same cluster.

python -m benchmarks.bench_dask [--quick] [--json FILE] [--workloads noop_functions,true,...]

One 2-worker LocalCluster (one thread each, worker processes) serves both the
raw Dask variants and the RHAPSODY Session; variants are interleaved round by
round (A/B/A/B). Workloads, each N tasks submitted at once then awaited:

- ``noop_functions``  ``echo(i)``; raw as ``client.map`` (``raw-map``) and per-task
                      ``client.submit`` (``raw``)
- ``true``            ``/bin/true``; raw: ``client.submit(subprocess.run ...)``
- ``stdout_1mb``      ``sh -c 'head -c 1048576 /dev/zero'``, stdout returned as text
- ``mixed``           a third sync no-op functions, a third ``async def``, a third ``/bin/true``
- ``latency``         submit one no-op, await it, next (per-task round trip)

``rhapsody-py``: the public rhapsody-py 0.6.0 Dask backend (its own venv, made
once under ~/.cache/rhapsody-bench, and its own 2-worker LocalCluster), same
workloads; skipped in --quick mode.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import Recorder, parse_args, scratch_dir, wait_all

ENGINE = "dask"
DEFAULT_N = {"noop": 10_000, "true": 1_000, "stdout_1mb": 100, "mixed": 1_000, "latency": 200}
QUICK_N = {"noop": 200, "true": 20, "stdout_1mb": 5, "mixed": 30, "latency": 10}
ONE_MB = ["/bin/sh", "-c", "head -c 1048576 /dev/zero"]
# workload name in results -> (N option, rhapsody-py driver workload)
WORKLOADS = {
    "noop_functions": ("noop", "echo"),
    "true": ("true", "true"),
    "stdout_1mb": ("stdout_1mb", "stdout_1mb"),
    "mixed": ("mixed", "mixed"),
    "latency": ("latency", "latency"),
}


def bounded(fn: Callable[[int], Awaitable[Any]], seconds: float) -> Callable[[int], Awaitable[Any]]:
    """``fn`` with a deadline against hangs (not a speed check)."""
    return lambda n: asyncio.wait_for(fn(n), seconds)


def run_command(cmd: list[str]) -> str:
    """The raw-Dask way to run a program in a worker (pickled by value: this
    module runs as ``__main__``)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr[-200:]}")
    return proc.stdout


async def main() -> None:
    args = parse_args(__doc__ or "", DEFAULT_N, QUICK_N)
    rec = Recorder(ENGINE, args)
    from distributed import Client, LocalCluster

    from benchmarks.rhapsody_py import QUICK_SKIP, RhapsodyPy
    from rhapsody import ComputeTask, Session, TaskState
    from rhapsody.testing import tasks as fn
    from rhapsody_dask import DaskExecutionBackend

    # the workers' dask-scratch-space and the session's files: gone after the run, not left in /tmp
    scratch = scratch_dir("rhapsody-bench-dask-")
    cluster = await LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        asynchronous=True,
        local_directory=scratch,
        scheduler_kwargs={"local_directory": scratch},  # the scheduler's own scratch too: Dask's default is <tmp>/dask-scratch-space
    )
    client = await Client(cluster, asynchronous=True)
    backend = DaskExecutionBackend(cluster=cluster)
    session = Session(backends=[backend], work_dir=scratch)
    await session.start()
    old = None if args.quick else RhapsodyPy("dask")

    async def gather_ok(futures: list, expect: list | None = None) -> None:
        values = await client.gather(futures)
        if expect is not None:
            assert values == expect, "wrong results"

    async def run_session(tasks: list[ComputeTask]) -> None:
        await session.submit_tasks(tasks)
        await wait_all(session, tasks)
        bad = [t for t in tasks if t.state is not TaskState.DONE]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(tasks)} not DONE: {bad[0].state} {bad[0].exception!r}")

    # --- raw Dask
    async def raw_map(n: int) -> None:
        await gather_ok(client.map(fn.echo, range(n), pure=False), list(range(n)))

    async def raw_submit(n: int) -> None:
        await gather_ok([client.submit(fn.echo, i, pure=False) for i in range(n)], list(range(n)))

    async def raw_exec(n: int, cmd: list[str]) -> None:
        await gather_ok([client.submit(run_command, cmd, pure=False) for _ in range(n)])

    async def raw_mixed(n: int) -> None:
        third = n // 3
        futures = [client.submit(fn.noop, pure=False) for _ in range(third)]
        futures += [client.submit(fn.async_add, 1, 2, pure=False) for _ in range(third)]  # Dask awaits coroutine functions
        futures += [client.submit(run_command, ["/bin/true"], pure=False) for _ in range(n - 2 * third)]
        await gather_ok(futures)

    async def raw_latency(n: int) -> None:
        for _ in range(n):
            await client.submit(fn.noop, pure=False)

    # --- RHAPSODY
    async def rh_noop(n: int) -> None:
        await run_session([ComputeTask(function=fn.echo, args=(i,)) for i in range(n)])

    async def rh_exec(n: int, cmd: list[str]) -> None:
        await run_session([ComputeTask(executable=cmd[0], arguments=cmd[1:]) for _ in range(n)])

    async def rh_mixed(n: int) -> None:
        third = n // 3
        tasks = [ComputeTask(function=fn.noop) for _ in range(third)]
        tasks += [ComputeTask(function=fn.async_add, args=(1, 2)) for _ in range(third)]
        tasks += [ComputeTask(executable="/bin/true") for _ in range(n - 2 * third)]
        await run_session(tasks)

    async def rh_latency(n: int) -> None:
        for _ in range(n):
            t = ComputeTask(function=fn.noop)
            await session.submit_tasks([t])
            await t

    variants = {
        "noop_functions": {"raw-map": raw_map, "raw": raw_submit, "rhapsody": rh_noop},
        "true": {"raw": lambda n: raw_exec(n, ["/bin/true"]), "rhapsody": lambda n: rh_exec(n, ["/bin/true"])},
        "stdout_1mb": {"raw": lambda n: raw_exec(n, ONE_MB), "rhapsody": lambda n: rh_exec(n, ONE_MB)},
        "mixed": {"raw": raw_mixed, "rhapsody": rh_mixed},
        "latency": {"raw": raw_latency, "rhapsody": rh_latency},
    }
    try:
        for workload, (n_name, rpy_workload) in WORKLOADS.items():
            if not rec.wanted(workload):
                continue
            n = getattr(args, f"n_{n_name}")
            limit = max(120.0, n * 0.05)  # generous deadline against hangs, not a speed check
            chosen = {name: bounded(f, limit) for name, f in variants[workload].items()}
            if old is None:
                rec.skip(workload, "rhapsody-py", n, QUICK_SKIP)
            else:
                chosen["rhapsody-py"] = lambda n, w=rpy_workload, s=limit: old.run(w, n, s)  # type: ignore[misc]
            await rec.ab(workload, n, chosen)
    finally:
        if old is not None:
            await old.close()
        await session.close()
        await client.close()
        await cluster.close()
        shutil.rmtree(scratch, ignore_errors=True)
    rec.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
