"""Dask: N no-op function tasks on a 2-worker LocalCluster (one thread each).

Variants, interleaved round by round on the same cluster:

- ``raw-map``     ``client.map`` + ``client.gather`` (asynchronous client)
- ``raw``         ``client.submit`` per task + one ``client.gather``
- ``rhapsody``    the same tasks as ``ComputeTask``s through ``Session`` + ``DaskExecutionBackend``
- ``rhapsody-py`` the public ``rhapsody-py`` 0.6.0 Dask backend, in its own venv
                  (``$RHAPSODY_PY_PYTHON``, default /work/scratch/venv-rpy/bin/python)
                  and its own 2-worker LocalCluster; only its submit+wait is timed.

Run from the repository root: ``python -m benchmarks.bench_dask [--quick] [--json FILE]``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from benchmarks.common import Recorder, parse_args

ENGINE = "dask"
WORKLOAD = "noop_functions"

# Runs inside the rhapsody-py venv: prints the seconds its submit+wait took, or raises.
_RPY_DRIVER = r"""
import asyncio, sys, time
from rhapsody import Session, ComputeTask
from rhapsody.backends import DaskExecutionBackend

def echo(x):
    return x

async def main(n, limit):
    backend = await DaskExecutionBackend({"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"})
    session = Session(backends=[backend])
    tasks = [ComputeTask(function=echo, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    await session.submit_tasks(tasks)
    await asyncio.wait_for(session.wait_tasks(tasks), limit)
    elapsed = time.perf_counter() - t0
    bad = [t for t in tasks if t["state"] != "DONE"]
    await backend.shutdown()
    if bad:
        raise SystemExit(f"{len(bad)} of {n} tasks not DONE, first: {bad[0]['state']} {bad[0].get('exception')!r}")
    print(elapsed)

if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


def run_rhapsody_py(n: int, limit: float) -> float:
    python = os.environ.get("RHAPSODY_PY_PYTHON", "/work/scratch/venv-rpy/bin/python")
    if not os.path.exists(python):
        raise RuntimeError(f"no rhapsody-py venv at {python} (set RHAPSODY_PY_PYTHON)")
    script = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"rpy_dask_driver_{os.getpid()}.py")
    with open(script, "w") as fh:
        fh.write(_RPY_DRIVER)
    try:
        out = subprocess.run([python, script, str(n), str(limit)], capture_output=True, text=True, timeout=limit + 120,
                             start_new_session=True)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"rhapsody-py did not finish {n} tasks within {limit + 120:.0f} s") from None
    finally:
        os.unlink(script)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"rhapsody-py exited {out.returncode}: {' | '.join(tail)}")
    return float(out.stdout.strip().splitlines()[-1])


async def main() -> None:
    args = parse_args(__doc__ or "", {"noop": 10_000}, {"noop": 500})
    n = args.n_noop
    rec = Recorder(ENGINE, args)
    from distributed import Client, LocalCluster

    from rhapsody import ComputeTask, Session, TaskState
    from rhapsody.testing import tasks as fn
    from rhapsody_dask import DaskExecutionBackend

    cluster = await LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", asynchronous=True)
    client = await Client(cluster, asynchronous=True)
    backend = DaskExecutionBackend(cluster=cluster)
    session = Session(backends=[backend], work_dir=os.environ.get("TMPDIR", "/tmp"))
    await session.start()

    async def raw_map(n: int) -> None:
        futures = client.map(fn.echo, range(n), pure=False)
        assert await client.gather(futures) == list(range(n))

    async def raw_submit(n: int) -> None:
        futures = [client.submit(fn.echo, i, pure=False) for i in range(n)]
        assert await client.gather(futures) == list(range(n))

    async def through_session(n: int) -> None:
        tasks = [ComputeTask(function=fn.echo, args=(i,)) for i in range(n)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        bad = [t for t in tasks if t.state is not TaskState.DONE]
        assert not bad, f"{len(bad)} not DONE: {bad[0].state} {bad[0].exception!r}"

    variants = {"raw-map": raw_map, "raw": raw_submit, "rhapsody": through_session}
    limit = max(120.0, n * 0.03)  # generous: 30 ms per task; the old backend may be quadratic
    for _ in range(args.repeats):
        for name, variant in variants.items():
            if rec.result(WORKLOAD, name, n).error:
                continue
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(variant(n), limit)
            except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
                rec.fail(WORKLOAD, name, n, f"{type(exc).__name__}: {exc}")
                print(f"  {name:<12} FAILED {exc!r}"[:300], file=sys.stderr, flush=True)
                continue
            rec.record(WORKLOAD, name, n, time.perf_counter() - t0)
            print(f"  {name:<12} {time.perf_counter() - t0:8.2f} s", file=sys.stderr, flush=True)
        if not rec.result(WORKLOAD, "rhapsody-py", n).error:
            try:
                seconds = await asyncio.to_thread(run_rhapsody_py, n, limit)
                rec.record(WORKLOAD, "rhapsody-py", n, seconds)
                print(f"  rhapsody-py  {seconds:8.2f} s", file=sys.stderr, flush=True)
            except Exception as exc:  # noqa: BLE001
                rec.fail(WORKLOAD, "rhapsody-py", n, f"{type(exc).__name__}: {exc}")

    await session.close()
    await client.close()
    await cluster.close()
    rec.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
