"""Dragon: V1 / V2 / V3 through a RHAPSODY Session next to the raw Dragon API.

    cd /work/main && DRAGON_DEFAULT_SEG_SZ=268435456 DRAGON_INF_SEG_SZ=134217728 \\
        dragon python -m benchmarks.bench_dragon [--quick] [--json FILE]

(plain ``python -m benchmarks.bench_dragon`` re-runs itself under the ``dragon`` launcher
from a temporary directory: Dragon's native ``Pool``, the raw V2 equivalent, cannot
start in a client that merely attached to a ``LocalRuntime`` -- it looks itself up
as a Dragon process and fails in ``current_process()``). Workloads, each as ``<kind>_<backend>``:

- ``fn``: no-op function tasks; ``exe``: ``/bin/true``;
- ``stdout``: ``/bin/sh`` printing 1 MiB to stdout, captured;
- ``mixed``: one third each sync function, ``async def`` function, ``/bin/true``;
- ``latency``: one task at a time, submit -> result (us/task is the latency).

Raw equivalents: V2 -> ``dragon.native.pool.Pool(2).apply_async`` (one call per
task; a fresh, warmed pool each round, see `in_fresh_pool`); its executables use
``subprocess.run(..., capture_output=True)`` in the pool (V2 captures too).
V1 -> one native ``dragon.native.process.Process`` per task, at most 2 at once,
stdout/stderr to files read back, exit code from ``join()`` (V1 does the same; the
V1 latency probe too). V3 -> ``Batch.options().function`` / ``.process``, rounds
alternating with V3's, each on a fresh Batch. ``rhapsody-py`` (V3 workloads only,
not in --quick): the 0.6.0 release's Batch-based DragonExecutionBackend, in rounds of its own.
Sizes: V2 runs the full 1,000 functions and 200 executables; a Python-function
Process costs 0.4-1.5 s of interpreter start here, so V1's function N is 40; Batch runs
~4 function tasks/s here, so V3 gets 40 functions and 10 executables. V2's latency probe
takes 200 tasks: a round trip is ~0.1-0.3 ms, so a few scheduler hiccups of several ms
would otherwise decide the mean; V1's (a process per task, ~12 ms) takes 100.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from typing import Any

from benchmarks.common import Elapsed, Recorder, parse_args, scratch_dir, wait_all
from rhapsody import ComputeTask, Session
from rhapsody.testing import tasks as fn

DEFAULT_N = {
    "fn": 1000,
    "exe": 200,
    "fn_v1": 40,
    "fn_v3": 40,
    "exe_v3": 10,
    "stdout": 20,
    "mixed": 300,
    "mixed_v1": 30,
    "latency": 200,
    "latency_v1": 100,
}
QUICK_N = {
    "fn": 100,
    "exe": 20,
    "fn_v1": 6,
    "fn_v3": 6,
    "exe_v3": 3,
    "stdout": 3,
    "mixed": 30,
    "mixed_v1": 6,
    "latency": 5,
    "latency_v1": 5,
}
WORKERS = 2
MIB_CMD = "yes 0123456789abcdef | head -c 1048576"


# ---------------------------------------------------------------- task bodies (run in Dragon processes)
def run_async_add(a: int, b: int) -> int:
    """The raw engines' way to run an ``async def``: ``asyncio.run`` in the worker."""
    return asyncio.run(fn.async_add(a, b))


def run_mib() -> str:
    """1 MiB of stdout, captured and shipped back (as RHAPSODY does)."""
    return subprocess.run(["/bin/sh", "-c", MIB_CMD], capture_output=True, text=True, check=True).stdout


def run_true() -> int:
    """``/bin/true`` with its output captured, as RHAPSODY captures every executable's."""
    return subprocess.run(["/bin/true"], capture_output=True, text=True).returncode


# ---------------------------------------------------------------- raw V2: the native pool
def raw_pool(pool: Any, n: int, kind: str) -> None:
    if kind == "fn":
        results = [pool.apply_async(fn.noop) for _ in range(n)]
    elif kind == "exe":
        results = [pool.apply_async(run_true) for _ in range(n)]
    elif kind == "stdout":
        results = [pool.apply_async(run_mib) for _ in range(n)]
    else:  # mixed
        results = []
        for i in range(n):
            if i % 3 == 0:
                results.append(pool.apply_async(fn.noop))
            elif i % 3 == 1:
                results.append(pool.apply_async(run_async_add, (i, 1)))
            else:
                results.append(pool.apply_async(run_true))
    for r in results:
        r.get(timeout=600)
    if kind == "stdout":
        assert all(len(r.get()) == 1 << 20 for r in results)


def raw_pool_map(pool: Any, n: int) -> None:
    """The pool's fastest path for many small calls: one chunked ``map``."""
    pool.map_async(fn.echo, range(n)).get(timeout=600)


def raw_pool_latency(pool: Any, n: int) -> None:
    for _ in range(n):
        pool.apply_async(fn.noop).get(timeout=60)


def in_fresh_pool(body: Any, *args: Any) -> Elapsed:
    """Time ``body(pool, *args)`` on a pool that exists only for this round.

    An idle ``Pool`` is not idle here: its workers and result handler keep
    ~55% of a core busy (measured: 11 CPU-seconds in 20 idle seconds), which
    would slow the RHAPSODY rounds run beside it on this 2-core box. V2's own
    workers block at no CPU cost when idle. Pool start and shutdown are not timed."""
    from dragon.native.pool import Pool

    pool = Pool(WORKERS)
    try:
        pool.map_async(fn.echo, range(2 * WORKERS)).get(timeout=120)  # workers up and warm
        t0 = time.perf_counter()
        body(pool, *args)
        return Elapsed(time.perf_counter() - t0)
    finally:
        pool.close()
        pool.join()


# ---------------------------------------------------------------- raw V1: native processes
def _process(kind: str, i: int, out: str) -> Any:
    from dragon.native.process import Process

    if kind == "fn" or (kind == "mixed" and i % 3 == 0):
        return Process(target=fn.noop)
    if kind == "mixed" and i % 3 == 1:
        return Process(target=run_async_add, args=(i, 1))
    if kind == "stdout":
        return Process("/bin/sh", args=["-c", MIB_CMD], stdout=f"{out}.{i}.out", stderr=f"{out}.{i}.err")
    return Process("/bin/true", args=[], stdout=f"{out}.{i}.out", stderr=f"{out}.{i}.err")


def raw_processes(n: int, kind: str, work: str) -> None:
    """One native Process per task, at most WORKERS at once (as V1 runs them)."""
    out = os.path.join(work, "raw-v1")
    running: list[tuple[int, Any]] = []
    started = 0
    while started < n or running:
        while started < n and len(running) < WORKERS:
            p = _process(kind, started, out)
            p.start()
            running.append((started, p))
            started += 1
        i, p = running.pop(0)
        code = p.join()  # Global Services' join answer carries the exit code (V1 uses it too)
        if code != 0:
            raise RuntimeError(f"raw process {i} exited {code}")
        if kind in ("exe", "stdout") or (kind == "mixed" and i % 3 == 2):  # an executable: read its output back
            with open(f"{out}.{i}.out") as fh:
                text = fh.read()
            assert kind != "stdout" or len(text) == 1 << 20
            with open(f"{out}.{i}.err") as fh:
                fh.read()
            os.unlink(f"{out}.{i}.out")
            os.unlink(f"{out}.{i}.err")


def raw_process_latency(n: int, work: str) -> None:
    """One ``/bin/true`` at a time, its output to files read back (as V1 captures it)."""
    from dragon.native.process import Process

    out = os.path.join(work, "raw-lat")
    for _ in range(n):
        p = Process("/bin/true", args=[], stdout=f"{out}.out", stderr=f"{out}.err")
        p.start()
        if p.join() != 0:
            raise RuntimeError("raw latency probe failed")
        for suffix in ("out", "err"):
            with open(f"{out}.{suffix}") as fh:
                fh.read()
            os.unlink(f"{out}.{suffix}")


# ---------------------------------------------------------------- raw V3: Batch
def raw_batch(batch: Any, n: int, kind: str) -> None:
    from dragon.native.process import ProcessTemplate

    if kind == "fn":
        tasks = [batch.options().function(fn.noop) for _ in range(n)]
    else:
        tasks = [batch.options().process(ProcessTemplate("/bin/true", args=())) for _ in range(n)]
    for t in tasks:
        t.get()


# ---------------------------------------------------------------- the same work through RHAPSODY
def make_tasks(backend: str, n: int, kind: str) -> list[ComputeTask]:
    def one(i: int) -> ComputeTask:
        if kind == "fn" or (kind == "mixed" and i % 3 == 0):
            return ComputeTask(function=fn.noop, backend=backend)
        if kind == "mixed" and i % 3 == 1:
            return ComputeTask(function=fn.async_add, args=(i, 1), backend=backend)
        if kind == "stdout":
            return ComputeTask(executable="/bin/sh", arguments=["-c", MIB_CMD], backend=backend)
        return ComputeTask(executable="/bin/true", backend=backend)

    return [one(i) for i in range(n)]


async def via_session(session: Session, backend: str, n: int, kind: str) -> None:
    tasks = make_tasks(backend, n, kind)
    await session.submit_tasks(tasks)
    await wait_all(session, tasks)
    bad = [t for t in tasks if t.state.value != "DONE"]
    if bad:
        raise RuntimeError(f"{len(bad)} tasks did not end DONE: {bad[0].exception!r}")
    if kind == "stdout" and any(len(t.stdout) != 1 << 20 for t in tasks):
        raise RuntimeError("a task's stdout is not 1 MiB")


async def latency_session(session: Session, backend: str, n: int, kind: str) -> None:
    for _ in range(n):
        (t,) = make_tasks(backend, 1, kind)
        await session.submit_tasks([t])
        await wait_all(session, [t])
        if t.state.value != "DONE":
            raise RuntimeError(f"latency probe task ended {t.state.value}: {t.exception!r}")


# ---------------------------------------------------------------- main
async def main() -> None:
    args = parse_args("Dragon V1/V2/V3 vs raw Dragon", DEFAULT_N, QUICK_N)
    rec = Recorder("dragon", args)
    t_start = time.perf_counter()
    from rhapsody_dragon import DragonExecutionBackendV1, DragonExecutionBackendV2, DragonExecutionBackendV3

    work = scratch_dir("bench-dragon-")
    # The Session starts the runtime when the program was not launched by `dragon`;
    # the raw pool / processes / Batch below then run on that same runtime.
    session = Session(
        [DragonExecutionBackendV2(name="v2", num_workers=WORKERS), DragonExecutionBackendV1(name="v1", num_workers=WORKERS)], work_dir=work
    )
    await session.start()
    try:
        for kind, n in (("fn", args.n_fn), ("exe", args.n_exe), ("stdout", args.n_stdout), ("mixed", args.n_mixed)):
            if rec.wanted(f"{kind}_v2"):
                variants = {
                    "raw": lambda n, k=kind: asyncio.to_thread(in_fresh_pool, raw_pool, n, k),
                    "rhapsody": lambda n, k=kind: via_session(session, "v2", n, k),
                }
                if kind == "fn":
                    variants["raw-map"] = lambda n: asyncio.to_thread(in_fresh_pool, raw_pool_map, n)
                await rec.ab(f"{kind}_v2", n, variants)
        if rec.wanted("latency_v2"):
            await rec.ab(
                "latency_v2",
                args.n_latency,
                {
                    "raw": lambda n: asyncio.to_thread(in_fresh_pool, raw_pool_latency, n),
                    "rhapsody": lambda n: latency_session(session, "v2", n, "fn"),
                },
            )
        for kind, n in (("exe", args.n_exe), ("fn", args.n_fn_v1), ("stdout", args.n_stdout), ("mixed", args.n_mixed_v1)):
            if rec.wanted(f"{kind}_v1"):
                await rec.ab(
                    f"{kind}_v1",
                    n,
                    {
                        "raw": lambda n, k=kind: asyncio.to_thread(raw_processes, n, k, work),
                        "rhapsody": lambda n, k=kind: via_session(session, "v1", n, k),
                    },
                )
        if rec.wanted("latency_v1"):
            await rec.ab(
                "latency_v1",
                args.n_latency_v1,
                {
                    "raw": lambda n: asyncio.to_thread(raw_process_latency, n, work),
                    "rhapsody": lambda n: latency_session(session, "v1", n, "exe"),
                },
            )

        if rec.wanted("fn_v3") or rec.wanted("exe_v3"):
            await bench_v3(rec, args, work, DragonExecutionBackendV3)
    finally:
        await session.close()
    rec.finish()
    fn_v2, fn_v3 = rec.results.get(("fn_v2", "rhapsody")), rec.results.get(("fn_v3", "rhapsody"))
    if fn_v2 and fn_v3 and fn_v2.seconds and fn_v3.seconds:
        print(f"V2/V3 function-task rate through RHAPSODY: {fn_v2.rate / fn_v3.rate:.0f}x ({fn_v2.rate:.0f} vs {fn_v3.rate:.1f} tasks/s)")
    print(f"total benchmark wall time: {time.perf_counter() - t_start:.0f} s", flush=True)
    if not os.environ.get("RHAPSODY_KEEP_BENCH_DIR"):
        shutil.rmtree(work, ignore_errors=True)


async def bench_v3(rec: Recorder, args: Any, work: str, backend_class: Any) -> None:
    """Raw Batch, V3 and rhapsody-py each get a Batch of their own (one Batch per node at a
    time is what a user would run). Each round runs raw on a fresh Batch, V3 on a fresh
    Session and rhapsody-py in a fresh driver (under a ``dragon`` launcher of its own: the
    old backend runs in its own venv, so it cannot join this runtime; this runtime's
    processes stay up meanwhile, as they do for the other two), in rotating order, with a
    short pause after each shutdown: Batch's processes wind down for a while after
    ``join()``, and whichever variant ran next would otherwise always pay for it."""
    from dragon.workflows.batch import Batch

    from benchmarks.rhapsody_py import QUICK_SKIP, RhapsodyPy

    kinds = [(kind, n) for kind, n in (("fn", args.n_fn_v3), ("exe", args.n_exe_v3)) if rec.wanted(f"{kind}_v3")]
    repeats, rec.args.repeats = rec.args.repeats, 1
    settle = 0.0 if rec.args.quick else 2.0

    async def raw_round() -> None:
        batch = await asyncio.to_thread(Batch, workers_per_node=1, results_ddict_mem=64 << 20)
        try:
            for kind, n in kinds:
                await rec.ab(f"{kind}_v3", n, {"raw": lambda n, k=kind: asyncio.to_thread(raw_batch, batch, n, k)})
        finally:
            await asyncio.to_thread(batch.join)

    async def v3_round() -> None:
        s3 = Session([backend_class(name="v3", num_workers=1)], work_dir=work)
        await s3.start()
        try:
            for kind, n in kinds:
                await rec.ab(f"{kind}_v3", n, {"rhapsody": lambda n, k=kind: via_session(s3, "v3", n, k)})
        finally:
            await s3.close()

    async def rpy_round() -> None:
        # the old DragonExecutionBackend is a Batch backend too (functions via .function,
        # executables via .process): same Batch settings as the two above
        old = RhapsodyPy("dragon", options={"batch_kwargs": {"workers_per_node": 1, "results_ddict_mem": 64 << 20}})
        try:
            for kind, n in kinds:
                workload = "noop" if kind == "fn" else "true"
                await rec.ab(f"{kind}_v3", n, {"rhapsody-py": lambda n, w=workload: old.run(w, n, max(300.0, n * 10.0))})
        finally:
            await old.close()

    rounds = [raw_round, v3_round]
    if rec.args.quick:
        for kind, n in kinds:
            rec.skip(f"{kind}_v3", "rhapsody-py", n, QUICK_SKIP)
    else:
        rounds.append(rpy_round)
    try:
        for i in range(repeats):
            for one_round in rounds[i % len(rounds) :] + rounds[: i % len(rounds)]:
                await one_round()
                await asyncio.sleep(settle)
    finally:
        rec.args.repeats = repeats


def relaunch() -> int:
    """Run this module under the ``dragon`` launcher, from a scratch directory
    (the launcher writes files into its working directory)."""
    import sys

    bindir = os.path.dirname(sys.executable)
    launcher = os.path.join(bindir, "dragon")
    if not os.path.exists(launcher):
        launcher = shutil.which("dragon") or "dragon"
    argv = list(sys.argv[1:])
    for i, a in enumerate(argv):  # paths given relative to the caller's directory
        if a == "--json" and i + 1 < len(argv):
            argv[i + 1] = os.path.abspath(argv[i + 1])
        elif a.startswith("--json="):
            argv[i] = "--json=" + os.path.abspath(a[len("--json=") :])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
    }
    env.setdefault("DRAGON_DEFAULT_SEG_SZ", str(256 << 20))
    env.setdefault("DRAGON_INF_SEG_SZ", str(128 << 20))
    scratch = scratch_dir("bench-dragon-launch-")
    try:
        return subprocess.call([launcher, sys.executable, "-m", "benchmarks.bench_dragon", *argv], cwd=scratch, env=env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    import dragon

    if dragon.in_dragon():
        asyncio.run(main())
    else:
        raise SystemExit(relaunch())
