"""What telemetry costs: the same workload with telemetry off and on, side by side.

python -m benchmarks.bench_telemetry [--quick] [--json FILE] [--workloads concurrent_noop,dask_noop,...]

Variants, interleaved round by round: ``off`` (a plain Session), ``telemetry``
(``session.start_telemetry()``: spans, metrics, resource polling every 5 s)
and ``telemetry+ckpt`` (the same plus the JSONL checkpoint, flushed every 5 s).
Each round uses a new Session (telemetry starts once per session); the time
counted runs from submitting the tasks until they have ended and telemetry
has counted them all (its spans, statistics and checkpoint lines made).
Workloads:

- ``concurrent_noop``  N no-op functions on the concurrent backend (2 threads)
- ``dask_noop``        N no-op functions on a 2-worker LocalCluster (one thread each)
- ``dask_true``        N ``/bin/true`` on that cluster
- ``long_run``         telemetry on, N tasks in 5 equal batches on the concurrent
                       backend: resident memory after each batch and the spans kept
                       (finished spans are exported or dropped, not hoarded)
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import Elapsed, Recorder, parse_args, rss_mb

DEFAULT_N = {"concurrent_noop": 10_000, "dask_noop": 2_000, "dask_true": 500, "long_run": 50_000}
QUICK_N = {"concurrent_noop": 300, "dask_noop": 100, "dask_true": 20, "long_run": 1_000}
VARIANTS = ("off", "telemetry", "telemetry+ckpt")


async def timed_run(make_backend: Callable[[], Awaitable[Any]], variant: str, make_tasks: Callable[[], list[Any]], scratch: str) -> Elapsed:
    from rhapsody import Session, TaskState

    session = Session(backends=[await make_backend()], work_dir=scratch)
    telemetry = None
    try:
        if variant != "off":
            telemetry = await session.start_telemetry(
                checkpoint_path=f"{scratch}/ckpt" if variant == "telemetry+ckpt" else None, checkpoint_interval=5.0
            )
        await session.start()
        tasks = make_tasks()
        gc.collect()
        t0 = time.perf_counter()
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks, timeout=3600)
        if telemetry is not None:
            # Telemetry turns queued transitions into counts, spans and checkpoint
            # lines a few times a second: the time counted includes that work for
            # these tasks, or a run shorter than the pump's period would hide it.
            counted = telemetry.task_count()["completed"]
            if counted != len(tasks):
                raise RuntimeError(f"telemetry counted {counted} of {len(tasks)} tasks completed")
        seconds = time.perf_counter() - t0
        bad = [t for t in tasks if t.state is not TaskState.DONE]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(tasks)} tasks not DONE: {bad[0].state} {bad[0].exception!r}")
        return Elapsed(seconds)
    finally:
        await session.close()


async def long_run(n: int, scratch: str) -> Elapsed:
    """Telemetry on for 5 batches; memory after each batch and spans kept."""
    from rhapsody import ComputeTask, Session
    from rhapsody.testing.tasks import noop
    from rhapsody_concurrent.backend import ConcurrentExecutionBackend

    session = Session(backends=[await ConcurrentExecutionBackend(name="concurrent", cores=2)], work_dir=scratch)
    telemetry = await session.start_telemetry()
    rss, t0 = [], time.perf_counter()
    try:
        for _ in range(5):
            tasks = [ComputeTask(function=noop) for _ in range(n // 5)]
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks, timeout=3600)
            del tasks
            gc.collect()
            telemetry.task_count()  # turns what is queued into telemetry now
            rss.append(round(rss_mb(), 1))
        seconds = time.perf_counter() - t0
        return Elapsed(
            seconds,
            {"rss_mb_per_batch": rss, "spans_kept": len(telemetry.read_traces()), "tasks_counted": telemetry.task_count()["completed"]},
        )
    finally:
        await session.close()


async def main() -> None:
    args = parse_args(__doc__ or "", DEFAULT_N, QUICK_N)
    rec = Recorder("telemetry", args)
    from distributed import LocalCluster

    from rhapsody import ComputeTask
    from rhapsody.testing.tasks import noop
    from rhapsody_concurrent.backend import ConcurrentExecutionBackend
    from rhapsody_dask import DaskExecutionBackend

    cluster = None
    with tempfile.TemporaryDirectory(prefix="rhapsody-bench-telemetry-") as scratch:
        try:
            if rec.wanted("concurrent_noop"):
                make = lambda: ConcurrentExecutionBackend(name="concurrent", cores=2)  # noqa: E731
                tasks = lambda: [ComputeTask(function=noop) for _ in range(args.n_concurrent_noop)]  # noqa: E731
                await rec.ab("concurrent_noop", args.n_concurrent_noop, _variants(make, tasks, scratch))
            if rec.wanted("dask_noop") or rec.wanted("dask_true"):
                cluster = await LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address="127.0.0.1:0",
                    asynchronous=True,
                    local_directory=scratch,  # its dask-scratch-space goes with the run's folder
                    scheduler_kwargs={"local_directory": scratch},  # and the scheduler's (Dask's default: <tmp>)
                )

                async def make_dask() -> Any:
                    return await DaskExecutionBackend(cluster=cluster)

                for workload, task in (
                    ("dask_noop", lambda: ComputeTask(function=noop)),
                    ("dask_true", lambda: ComputeTask(executable="/bin/true")),
                ):
                    n = getattr(args, f"n_{workload}")
                    if rec.wanted(workload):
                        await rec.ab(workload, n, _variants(make_dask, lambda n=n, task=task: [task() for _ in range(n)], scratch))
            if rec.wanted("long_run"):
                await rec.ab("long_run", args.n_long_run, {"telemetry": lambda n: long_run(n, scratch)})
        finally:
            if cluster is not None:
                await asyncio.wait_for(cluster.close(), 120)
    rec.finish()
    _ratios(rec)


def _variants(
    make: Callable[[], Awaitable[Any]], tasks: Callable[[], list[Any]], scratch: str
) -> dict[str, Callable[[int], Awaitable[Any]]]:
    return {v: (lambda n, v=v: timed_run(make, v, tasks, scratch)) for v in VARIANTS}


def _ratios(rec: Recorder) -> None:
    print("\ntelemetry cost (median on / median off):")
    for (workload, variant), result in sorted(rec.results.items()):
        off = rec.results.get((workload, "off"))
        if variant != "off" and off is not None and off.seconds and result.seconds:
            print(f"  {workload:<18}{variant:<16}{result.median / off.median:6.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
