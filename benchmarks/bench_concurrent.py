"""rhapsody-concurrent against a bare ThreadPoolExecutor / asyncio subprocesses.

python -m benchmarks.bench_concurrent [--quick] [--json FILE] [--workloads noop,true,...]

Two workers everywhere (the pool, the backend's cores, the subprocess
semaphore). Workloads: ``noop`` functions, ``true`` (/bin/true), ``stdout_1mb``
(sh -c 'head -c 1048576 /dev/zero'), ``mixed`` (a third each of sync, async
functions and /bin/true), ``latency`` (submit one, await it, next), ``burst``
(N no-op functions queued at once: submission time, completion time, RSS growth
of this process), ``journal`` (N no-op functions through a fresh Session without
and with ``journal=`` (identity by description hash), and with a journal and
a uid per task; the ``vs_no_journal`` figure is the journal's cost). ``rhapsody-py``: the public rhapsody-py 0.6.0
ConcurrentExecutionBackend on a 2-thread pool, in its own venv (made once under
~/.cache/rhapsody-bench); skipped in --quick mode.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import itertools
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Recorder, parse_args, rss_mb, wait_all
from benchmarks.rhapsody_py import QUICK_SKIP, RhapsodyPy
from rhapsody import ComputeTask, Session
from rhapsody.execution.noop import NoopExecutionBackend
from rhapsody.testing.tasks import noop
from rhapsody_concurrent.backend import ConcurrentExecutionBackend

WORKERS = 2
DEFAULT_N = {
    "noop": 10_000,
    "true": 1_000,
    "stdout_1mb": 100,
    "mixed": 1_000,
    "latency": 200,
    "burst": 100_000,
    "hot_noop": 10_000,
    "hot_noop_100k": 100_000,
    "hot_roundtrip": 1_000,
    "noop_backend": 100_000,
    "journal": 10_000,
}
QUICK_N = {
    "noop": 500,
    "true": 50,
    "stdout_1mb": 5,
    "mixed": 60,
    "latency": 20,
    "burst": 2_000,
    "hot_noop": 500,
    "hot_noop_100k": 2_000,
    "hot_roundtrip": 50,
    "noop_backend": 2_000,
    "journal": 500,
}
HOT_WORKERS = 8  # the hot-path figures: one pool of 8 threads for raw, RHAPSODY and rhapsody-py
ONE_MB = "head -c 1048576 /dev/zero"


async def run_session(session: Session, tasks: list[ComputeTask]) -> None:
    await session.submit_tasks(tasks)
    await wait_all(session, tasks)
    bad = [t for t in tasks if t.state.value != "DONE"]
    if bad:
        raise RuntimeError(f"{len(bad)} tasks did not end DONE: {bad[0].exception!r}")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def journal_cost(rec: Recorder, n: int) -> None:
    """The same N no-op tasks, each round in a fresh Session and backend, without
    and with a journal (a new file each round: every task is recorded, none restored)."""
    folder = Path(tempfile.mkdtemp(prefix="rhapsody-bench-journal-"))
    rounds = itertools.count()
    cpu: dict[str, list[float]] = {}  # CPU seconds of this process per round: less swayed by a loaded box than wall time

    async def one(n: int, journal: bool, uids: bool) -> None:
        path = folder / f"run-{next(rounds)}.db" if journal else None
        c0 = cpu_seconds()
        backend = ConcurrentExecutionBackend(name="concurrent", cores=WORKERS)
        async with Session(backends=[backend], work_dir=folder, journal=path) as session:
            tasks = [ComputeTask(function=noop, uid=f"t{i}") if uids else ComputeTask(function=noop) for i in range(n)]
            await run_session(session, tasks)
        variant = "rhapsody" if not journal else "journal-uid" if uids else "journal"
        cpu.setdefault(variant, []).append(cpu_seconds() - c0)

    try:
        variants = {
            "rhapsody": lambda n: one(n, False, False),
            "journal": lambda n: one(n, True, False),
            "journal-uid": lambda n: one(n, True, True),
        }
        await rec.ab("journal", n, variants)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = rec.result("journal", "rhapsody", n)
    for variant, times in cpu.items():
        rec.result("journal", variant, n).extra["cpu_s"] = round(statistics.median(times), 3)
    for variant in ("journal", "journal-uid"):
        res = rec.result("journal", variant, n)
        if base.seconds and res.seconds:
            res.extra["vs_no_journal"] = round(res.median / base.median, 3)
        if cpu.get(variant) and cpu.get("rhapsody"):
            res.extra["cpu_vs_no_journal"] = round(statistics.median(cpu[variant]) / statistics.median(cpu["rhapsody"]), 3)
    rec.result("journal", "rhapsody", n).extra["loadavg_1m"] = round(os.getloadavg()[0], 2)


async def main() -> None:
    args = parse_args(__doc__ or "", DEFAULT_N, QUICK_N)
    rec = Recorder("concurrent", args)
    pool = cf.ThreadPoolExecutor(max_workers=WORKERS)
    backend = await ConcurrentExecutionBackend(name="concurrent", cores=WORKERS)
    session = Session(backends=[backend], work_dir="/tmp/rhapsody-bench")
    loop = asyncio.get_running_loop()
    old = None if args.quick else RhapsodyPy("concurrent", WORKERS)

    def with_old(workload: str, n: int, variants: dict) -> dict:
        """Add the rhapsody-py column (or record why it is not run)."""
        if old is None:
            rec.skip(workload, "rhapsody-py", n, QUICK_SKIP)
            return variants
        return {**variants, "rhapsody-py": lambda n: old.run(workload, n, max(300.0, n * 0.05))}

    async def raw_noop(n: int) -> None:
        futures = [pool.submit(noop) for _ in range(n)]
        cf.wait(futures)

    async def raw_noop_asyncio(n: int) -> None:
        await asyncio.gather(*(loop.run_in_executor(pool, noop) for _ in range(n)))

    async def rh_noop(n: int) -> None:
        await run_session(session, [ComputeTask(function=noop) for _ in range(n)])

    async def raw_exec(n: int, cmd: list[str]) -> None:
        sem = asyncio.Semaphore(WORKERS)

        async def one() -> None:
            async with sem:
                p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                await p.communicate()
                if p.returncode:
                    raise RuntimeError(f"exit {p.returncode}")

        await asyncio.gather(*(one() for _ in range(n)))

    async def rh_exec(n: int, cmd: list[str]) -> None:
        await run_session(session, [ComputeTask(executable=cmd[0], arguments=cmd[1:]) for _ in range(n)])

    if rec.wanted("burst"):
        # One shot (memory is the point): queue N function tasks at once.
        gc.collect()
        rss0 = rss_mb()
        n = args.n_burst
        t0 = time.perf_counter()
        tasks = [ComputeTask(function=noop) for _ in range(n)]
        await session.submit_tasks(tasks)
        t_submit = time.perf_counter() - t0
        rss_queued = rss_mb() - rss0
        await wait_all(session, tasks)
        t_done = time.perf_counter() - t0
        rec.record("burst", "rhapsody", n, t_done, submit_s=round(t_submit, 3), rss_growth_mb=round(max(rss_queued, rss_mb() - rss0), 1))
        del tasks
        gc.collect()
        rss0 = rss_mb()
        t0 = time.perf_counter()
        futures = [pool.submit(noop) for _ in range(n)]
        t_submit = time.perf_counter() - t0
        rss_queued = rss_mb() - rss0
        cf.wait(futures)
        rec.record(
            "burst",
            "raw",
            n,
            time.perf_counter() - t0,
            submit_s=round(t_submit, 3),
            rss_growth_mb=round(max(rss_queued, rss_mb() - rss0), 1),
        )
        if old is None:
            rec.skip("burst", "rhapsody-py", n, QUICK_SKIP)
        else:
            try:
                measured = await old.run("burst", n, max(600.0, n * 0.01))
                rec.record("burst", "rhapsody-py", n, measured.seconds, **measured.extra)
            except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
                rec.fail("burst", "rhapsody-py", n, f"{type(exc).__name__}: {exc}")

    if rec.wanted("noop"):
        await rec.ab(
            "noop", args.n_noop, with_old("noop", args.n_noop, {"raw": raw_noop, "raw-asyncio": raw_noop_asyncio, "rhapsody": rh_noop})
        )
    if rec.wanted("true"):
        await rec.ab(
            "true",
            args.n_true,
            with_old("true", args.n_true, {"raw": lambda n: raw_exec(n, ["/bin/true"]), "rhapsody": lambda n: rh_exec(n, ["/bin/true"])}),
        )
    if rec.wanted("stdout_1mb"):
        sh = ["/bin/sh", "-c", ONE_MB]
        await rec.ab(
            "stdout_1mb",
            args.n_stdout_1mb,
            with_old("stdout_1mb", args.n_stdout_1mb, {"raw": lambda n: raw_exec(n, sh), "rhapsody": lambda n: rh_exec(n, sh)}),
        )
    if rec.wanted("mixed"):

        async def raw_mixed(n: int) -> None:
            third = n // 3
            await asyncio.gather(raw_noop_asyncio(third), raw_noop_asyncio(third), raw_exec(n - 2 * third, ["/bin/true"]))

        async def rh_mixed(n: int) -> None:
            from rhapsody.testing.tasks import async_add

            third = n // 3
            tasks = [ComputeTask(function=noop) for _ in range(third)]
            tasks += [ComputeTask(function=async_add, args=(1, 2)) for _ in range(third)]
            tasks += [ComputeTask(executable="/bin/true") for _ in range(n - 2 * third)]
            await run_session(session, tasks)

        await rec.ab("mixed", args.n_mixed, with_old("mixed", args.n_mixed, {"raw": raw_mixed, "rhapsody": rh_mixed}))
    if rec.wanted("latency"):

        async def raw_latency(n: int) -> None:
            for _ in range(n):
                await loop.run_in_executor(pool, noop)

        async def rh_latency(n: int) -> None:
            for _ in range(n):
                t = ComputeTask(function=noop)
                await session.submit_tasks([t])
                await t

        await rec.ab("latency", args.n_latency, with_old("latency", args.n_latency, {"raw": raw_latency, "rhapsody": rh_latency}))
    if rec.wanted("journal"):
        await journal_cost(rec, args.n_journal)
    await hot_path(rec, args)
    if old is not None:
        await old.close()
    await session.close()
    pool.shutdown()
    rec.finish()


async def hot_path(rec: Recorder, args: Any) -> None:
    """No-op throughput and one-at-a-time round trip on one 8-thread pool, and
    the NoopExecutionBackend alone."""
    names = ("hot_noop", "hot_noop_100k", "hot_roundtrip", "noop_backend")
    if not any(rec.wanted(name) for name in names):
        return
    pool = cf.ThreadPoolExecutor(max_workers=HOT_WORKERS)
    backend = await ConcurrentExecutionBackend(pool, "hot")
    session = Session(backends=[backend], work_dir="/tmp/rhapsody-bench")
    loop = asyncio.get_running_loop()
    old = None if args.quick else RhapsodyPy("concurrent", HOT_WORKERS)

    async def raw_noop(n: int) -> None:
        futures = [pool.submit(noop) for _ in range(n)]
        cf.wait(futures)

    async def rh_noop(n: int) -> None:
        await run_session(session, [ComputeTask(function=noop) for _ in range(n)])

    def counting_gc(workload: str, variant: str, fn: Any) -> Any:
        """``fn`` with the cyclic collections it set off recorded (per generation, the
        last round's), next to its time: at 100,000 tasks in flight they are a large share;
        and the CPU time of this process per task (``cpu_us``, the last round's: all threads,
        less swayed by a loaded box than wall time; #16's bar is under 20 µs)."""

        async def counted(n: int) -> None:
            counts = [0, 0, 0]

            def seen(phase: str, info: dict[str, int]) -> None:
                if phase == "stop":
                    counts[info["generation"]] += 1

            gc.callbacks.append(seen)
            c0 = time.process_time()
            try:
                await fn(n)
            finally:
                gc.callbacks.remove(seen)
            extra = rec.result(workload, variant, n).extra
            extra["gc_collections"] = counts
            extra["cpu_us"] = round((time.process_time() - c0) / n * 1e6, 1)

        return counted

    async def raw_roundtrip(n: int) -> None:
        for _ in range(n):
            await loop.run_in_executor(pool, noop)

    async def rh_roundtrip(n: int) -> None:
        for _ in range(n):
            t = ComputeTask(function=noop)
            await session.submit_tasks([t])
            await t

    def variants(workload: str, old_workload: str, n: int, raw: Any, mine: Any) -> dict[str, Any]:
        found = {"raw": raw, "rhapsody": mine}
        if old is None:
            rec.skip(workload, "rhapsody-py", n, QUICK_SKIP)
        else:
            found["rhapsody-py"] = lambda n: old.run(old_workload, n, max(300.0, n * 0.05))
        return found

    for name, old_name, raw, mine in (
        ("hot_noop", "noop", raw_noop, rh_noop),
        ("hot_noop_100k", "noop", raw_noop, rh_noop),
        ("hot_roundtrip", "latency", raw_roundtrip, rh_roundtrip),
    ):
        if rec.wanted(name):
            n = getattr(args, f"n_{name}")
            raw, mine = counting_gc(name, "raw", raw), counting_gc(name, "rhapsody", mine)
            await rec.ab(name, n, variants(name, old_name, n, raw, mine))
    if rec.wanted("noop_backend"):
        noop_session = Session(backends=[await NoopExecutionBackend(name="noop")], work_dir="/tmp/rhapsody-bench")
        await rec.ab(
            "noop_backend",
            args.n_noop_backend,
            {
                "rhapsody": counting_gc(
                    "noop_backend", "rhapsody", lambda n: run_session(noop_session, [ComputeTask(function=noop) for _ in range(n)])
                )
            },
        )
        await noop_session.close()
    if old is not None:
        await old.close()
    await session.close()
    pool.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
