"""Runs INSIDE the rhapsody-py 0.6.0 venv (not part of the ``benchmarks`` package
at run time): drives the old system's Session + one backend and times workloads
on request, so the parent benchmark can interleave it round by round with the
raw engine and RHAPSODY.

    <venv>/bin/python _rpy_driver.py concurrent|dask|dragon|radical WORKERS SOCKET OPTIONS
    <venv>/bin/dragon <venv>/bin/python _rpy_driver.py dragon ...   (Dragon needs its runtime)

WORKERS sizes the concurrent / Dask pool; OPTIONS (JSON) are the Dragon / RADICAL-Pilot
backend's constructor keywords. It connects to the parent's Unix socket SOCKET and
speaks one JSON object per line there: it first writes ``{"ready": true}`` (or
``{"error": ...}``); then for each request ``{"workload": W, "n": N}`` it writes
``{"seconds": S, "extra": {...}}`` or ``{"error": ...}``. EOF or ``{"quit": true}``
shuts the backend down. Only submit + wait is timed. Its stdout / stderr are free
for the libraries' prints.
"""

import asyncio
import concurrent.futures as cf
import gc
import json
import os
import resource
import socket
import sys
import time
import traceback

ONE_MB = "head -c 1048576 /dev/zero"
HEARTBEAT = 0.005  # s, see main()


def noop():
    return None


def echo(value):
    return value


async def async_add(a, b):
    import asyncio  # self-contained: RP ships this function by value, without this module's globals

    await asyncio.sleep(0)
    return a + b


def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


async def main(kind, workers, options, inbox, outbox):
    from rhapsody import ComputeTask, Session

    if kind == "concurrent":
        from rhapsody.backends import ConcurrentExecutionBackend

        backend = await ConcurrentExecutionBackend(cf.ThreadPoolExecutor(max_workers=workers))
    elif kind == "dask":
        from rhapsody.backends import DaskExecutionBackend

        backend = await DaskExecutionBackend({"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"})
    elif kind == "dragon":
        from rhapsody.backends.execution.dragon import DragonExecutionBackend

        backend = await DragonExecutionBackend(**options)
    elif kind == "radical":
        from rhapsody.backends.execution.radical_pilot import RadicalExecutionBackend

        backend = await RadicalExecutionBackend(**options)
    else:
        raise SystemExit(f"unknown backend {kind!r}")
    session = Session(backends=[backend], work_dir=os.getcwd())  # the parent runs us in a scratch directory
    noted, background = {}, []
    if kind == "radical":
        # Its RP backend sets the Session's asyncio futures straight from RP's callback thread
        # (no call_soon_threadsafe), which does not wake this loop: a finished task would go
        # unnoticed until something else does. A heartbeat is that something, and is reported.
        noted = {"loop_tick_ms": HEARTBEAT * 1000}

        async def heartbeat():
            while True:
                await asyncio.sleep(HEARTBEAT)

        background.append(asyncio.ensure_future(heartbeat()))

    def make(workload, n):
        if workload == "noop":
            return [ComputeTask(function=noop) for _ in range(n)]
        if workload == "echo":
            return [ComputeTask(function=echo, args=(i,)) for i in range(n)]
        if workload == "true":
            return [ComputeTask(executable="/bin/true") for _ in range(n)]
        if workload == "stdout_1mb":
            return [ComputeTask(executable="/bin/sh", arguments=["-c", ONE_MB]) for _ in range(n)]
        if workload == "mixed":
            third = n // 3
            tasks = [ComputeTask(function=noop) for _ in range(third)]
            tasks += [ComputeTask(function=async_add, args=(1, 2)) for _ in range(third)]
            tasks += [ComputeTask(executable="/bin/true") for _ in range(n - 2 * third)]
            return tasks
        raise ValueError(f"unknown workload {workload!r}")

    def check(tasks):
        bad = [t for t in tasks if t["state"] != "DONE"]
        if bad:
            t = bad[0]
            raise RuntimeError(
                f"{len(bad)} of {len(tasks)} tasks not DONE; first: state={t['state']} "
                f"exit_code={t.get('exit_code')} exception={t.get('exception')!r} stderr={str(t.get('stderr'))[:200]!r}"
            )
        # DONE must come with the function's value (it would not if DONE were reported early)
        for t in tasks:
            fn = t.get("function")
            want = 3 if fn is async_add else t["args"][0] if fn is echo else None
            if fn in (async_add, echo) and t.get("return_value") != want:
                raise RuntimeError(f"task {t.get('uid')} is DONE with return_value={t.get('return_value')!r}, expected {want!r}")

    async def run(workload, n):
        extra = {}
        if workload == "latency":
            t0 = time.perf_counter()
            for _ in range(n):
                t = ComputeTask(function=noop)
                await session.submit_tasks([t])
                await session.wait_tasks([t])
                check([t])
            return time.perf_counter() - t0, extra
        if workload == "burst":
            gc.collect()
            rss0 = rss_mb()
            t0 = time.perf_counter()
            tasks = [ComputeTask(function=noop) for _ in range(n)]
            await session.submit_tasks(tasks)
            submit_s = time.perf_counter() - t0
            rss_queued = rss_mb() - rss0
            await session.wait_tasks(tasks)
            elapsed = time.perf_counter() - t0
            check(tasks)
            extra = {"submit_s": round(submit_s, 3), "rss_growth_mb": round(max(rss_queued, rss_mb() - rss0), 1)}
            return elapsed, extra
        tasks = make(workload, n)
        t0 = time.perf_counter()
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        elapsed = time.perf_counter() - t0
        check(tasks)
        if workload == "stdout_1mb":
            short = min(len(t.get("stdout") or "") for t in tasks)
            if short < 2**20:  # say so: the figure is then not for the same work
                extra = {"stdout_captured": f"{short} of {2**20} bytes"}
        return elapsed, extra

    def send(obj):
        outbox.write(json.dumps(obj) + "\n")
        outbox.flush()

    send({"ready": True})
    loop = asyncio.get_running_loop()
    reader = cf.ThreadPoolExecutor(max_workers=1)
    try:
        while True:
            line = await loop.run_in_executor(reader, inbox.readline)
            if not line:
                break
            req = json.loads(line)
            if req.get("quit"):
                break
            try:
                seconds, extra = await run(req["workload"], int(req["n"]))
                send({"seconds": seconds, "extra": {**extra, **noted}})
            except Exception as exc:  # noqa: BLE001 - report, keep serving
                traceback.print_exc()
                send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        reader.shutdown(wait=False)
        await asyncio.wait_for(session.close(), 60)  # shuts the backend down


if __name__ == "__main__":
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[3])
    # one file per direction: a thread blocks reading while the loop writes
    inbox, outbox = sock.makefile("r", encoding="utf-8"), sock.makefile("w", encoding="utf-8")
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[4]), inbox, outbox))
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            outbox.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
            outbox.flush()
        raise
