"""Dragon: V1 / V2 / V3 through a RHAPSODY Session next to the raw Dragon API.

    cd /work/main && DRAGON_DEFAULT_SEG_SZ=268435456 DRAGON_INF_SEG_SZ=134217728 \\
        dragon python -m benchmarks.bench_dragon [--quick] [--json FILE]

(run from any directory; the launcher writes small files into the current one).
Workloads: ``fn_v2`` / ``fn_v1`` / ``fn_v3`` no-op functions, ``exe_v1`` / ``exe_v2`` /
``exe_v3`` ``/bin/true``. Raw equivalents: ``dragon.native.pool.Pool.apply_async``
(V2, same worker count), native ``Process`` with the same concurrency cap (V1),
``Batch.function`` / ``Batch.process`` (V3). Batch runs ~4 function tasks/s on a
2-core box, so V3's N is 40 functions and 10 executables, not 1000 / 200.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from benchmarks.common import Recorder, parse_args
from rhapsody import ComputeTask, Session
from rhapsody.testing import tasks as fn

DEFAULT_N = {"fn": 1000, "exe": 200, "fn_v3": 40, "exe_v3": 10, "fn_v1": 100}
QUICK_N = {"fn": 100, "exe": 20, "fn_v3": 8, "exe_v3": 4, "fn_v1": 10}
WORKERS = 2


def raw_pool(pool, n: int) -> None:
    results = [pool.apply_async(fn.noop) for _ in range(n)]
    for r in results:
        r.get(timeout=600)


def raw_pool_exe(pool, n: int) -> None:
    import subprocess  # noqa: PLC0415

    results = [pool.apply_async(subprocess.run, (["/bin/true"],)) for _ in range(n)]
    for r in results:
        r.get(timeout=600)


def raw_processes(n: int, target, args=()) -> None:
    """Native Process per task, at most WORKERS at once (as V1 does)."""
    from dragon.native.process import Process  # noqa: PLC0415

    running: list = []
    started = 0
    while started < n or running:
        while started < n and len(running) < WORKERS:
            p = Process(target=target, args=args)
            p.start()
            running.append(p)
            started += 1
        running.pop(0).join()


def raw_batch_fn(batch, n: int) -> None:
    tasks = [batch.options().function(fn.noop) for _ in range(n)]
    for t in tasks:
        t.get()


def raw_batch_exe(batch, n: int) -> None:
    from dragon.native.process import ProcessTemplate  # noqa: PLC0415

    tasks = [batch.options().process(ProcessTemplate("/bin/true", args=())) for _ in range(n)]
    for t in tasks:
        t.get()


async def via_session(session: Session, backend: str, n: int, exe: bool) -> None:
    if exe:
        tasks = [ComputeTask(executable="/bin/true", backend=backend) for _ in range(n)]
    else:
        tasks = [ComputeTask(function=fn.noop, backend=backend) for _ in range(n)]
    await session.submit_tasks(tasks)
    await session.wait_tasks(tasks)
    bad = [t for t in tasks if t.state.value != "DONE"]
    if bad:
        raise RuntimeError(f"{len(bad)} tasks did not end DONE: {bad[0].exception!r}")


async def main() -> None:
    args = parse_args("Dragon V1/V2/V3 vs raw Dragon", DEFAULT_N, QUICK_N)
    rec = Recorder("dragon", args)
    from dragon.native.pool import Pool  # noqa: PLC0415
    from dragon.workflows.batch import Batch  # noqa: PLC0415

    from rhapsody_dragon import DragonExecutionBackendV1, DragonExecutionBackendV2, DragonExecutionBackendV3  # noqa: PLC0415

    work = tempfile.mkdtemp(prefix="bench-dragon-")
    session = Session([DragonExecutionBackendV2(name="v2", num_workers=WORKERS),
                       DragonExecutionBackendV1(name="v1", num_workers=WORKERS)], work_dir=work)
    await session.start()
    pool = Pool(WORKERS)
    try:
        if rec.wanted("fn_v2"):
            await rec.ab("fn_v2", args.n_fn, {"raw": lambda n: asyncio.to_thread(raw_pool, pool, n),
                                              "rhapsody": lambda n: via_session(session, "v2", n, False)})
        if rec.wanted("exe_v2"):
            await rec.ab("exe_v2", args.n_exe, {"raw": lambda n: asyncio.to_thread(raw_pool_exe, pool, n),
                                                "rhapsody": lambda n: via_session(session, "v2", n, True)})
        if rec.wanted("exe_v1"):
            await rec.ab("exe_v1", args.n_exe, {"raw": lambda n: asyncio.to_thread(raw_processes, n, "/bin/true"),
                                                "rhapsody": lambda n: via_session(session, "v1", n, True)})
        if rec.wanted("fn_v1"):
            await rec.ab("fn_v1", args.n_fn_v1, {"raw": lambda n: asyncio.to_thread(raw_processes, n, fn.noop),
                                                 "rhapsody": lambda n: via_session(session, "v1", n, False)})
    finally:
        pool.close()
        pool.join()
        await session.close()
    if rec.wanted("fn_v3") or rec.wanted("exe_v3"):
        # Raw Batch and V3 each get a Batch of their own, one after the other (one
        # Batch per node at a time is what a user would run).
        rec.args.repeats = min(rec.args.repeats, 2)
        batch = Batch(workers_per_node=1, results_ddict_mem=64 << 20)
        try:
            if rec.wanted("fn_v3"):
                await rec.ab("fn_v3", args.n_fn_v3, {"raw": lambda n: asyncio.to_thread(raw_batch_fn, batch, n)})
            if rec.wanted("exe_v3"):
                await rec.ab("exe_v3", args.n_exe_v3, {"raw": lambda n: asyncio.to_thread(raw_batch_exe, batch, n)})
        finally:
            batch.join()
        s3 = Session([DragonExecutionBackendV3(name="v3", num_workers=1)], work_dir=work)
        await s3.start()
        try:
            if rec.wanted("fn_v3"):
                await rec.ab("fn_v3", args.n_fn_v3, {"rhapsody": lambda n: via_session(s3, "v3", n, False)})
            if rec.wanted("exe_v3"):
                await rec.ab("exe_v3", args.n_exe_v3, {"rhapsody": lambda n: via_session(s3, "v3", n, True)})
        finally:
            await s3.close()
    rec.finish()
    os.environ.get("RHAPSODY_KEEP_BENCH_DIR") or __import__("shutil").rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
