"""rhapsody-radical against raw RADICAL-Pilot TaskManager / raptor submission, same run.

python -m benchmarks.bench_radical [--quick] [--json FILE] [--workloads true,mixed,...]

One real local.localhost pilot at a time: each round starts a pilot for raw
``rp.TaskManager`` + raptor, runs every workload on it once, and tears it down; then the
same through a RHAPSODY Session + RadicalExecutionBackend; then (not in --quick) through
rhapsody-py 0.6.0. Rounds interleave raw / rhapsody / rhapsody-py. A pilot's own
processes (bridges, agent components, raptor master and worker) keep this 2-core box
busy even when idle: with three pilots alive at once, as before, the load average rose
to 19-50 and one variant's rounds took nine times as long as in the run before.
Each pilot declares 4 cores (oversubscribing the box on purpose): raptor (1-core master
+ one 1-core worker, started with the pilot) holds two and leaves two to executables,
otherwise executables would wait for raptor to stop. N is sized to RP's speed (tens of
tasks per second at best).

- ``first_task``  seconds from creating the RP session / the backend to the first
                  ``/bin/true`` DONE (pilot + raptor start included; once per pilot)
- ``true``        N ``/bin/true`` submitted at once, until all are DONE
- ``stdout_1mb``  N ``sh -c 'head -c 1048576 /dev/zero'``; the 1 MB stdout file of
                  each task is read back (raw RP itself keeps only the last 1 KiB)
- ``mixed``       a third sync no-op functions and a third ``async def`` functions
                  (both through raptor), a third ``/bin/true``
- ``latency``     one no-op function through raptor, await it, next

``rhapsody-py`` (not in --quick): the public rhapsody-py 0.6.0 RadicalExecutionBackend
(its own venv and process, raptor configured like the others), on a pilot of the same size.

The functions are shipped BY VALUE in all three variants. Raptor runs every function
task in a freshly forked process (two forks per task), so a function pickled by
reference has its module imported anew for each task: ``rhapsody.testing.tasks.noop``
costs an import of the whole ``rhapsody`` package, 30-45 ms of CPU per task (45 without
.pyc files, as under PYTHONDONTWRITEBYTECODE), and when three pilots shared 2 cores
that made ``raw`` and ``rhapsody`` twice as slow as rhapsody-py on ``latency`` /
``mixed``, whose driver's functions live in its ``__main__`` (pickled by value).
Hence `FNS`.
Function results are checked (``async_add`` must return 3) in every variant.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Elapsed, Recorder, parse_args, scratch_dir, wait_all
from benchmarks.rhapsody_py import QUICK_SKIP, RhapsodyPy, ensure_python
from rhapsody import ComputeTask, Session
from rhapsody_radical import environment as envfix
from rhapsody_radical import id_counter
from rhapsody_radical.backend import RadicalExecutionBackend

DEFAULT_N = {"true": 200, "stdout_1mb": 30, "mixed": 60, "latency": 20}
QUICK_N = {"true": 20, "stdout_1mb": 3, "mixed": 9, "latency": 3}
CORES = 4  # declared: 2 for raptor, 2 for executables
PILOT = {"resource": "local.localhost", "runtime": 30, "cores": CORES}
START_LIMIT = 600.0  # seconds a pilot may take to run its first task, against hangs only
ONE_MB = ["-c", "head -c 1048576 /dev/zero"]
# the old backend's raptor: one 1-core master with one 1-core worker, as raw and RHAPSODY have
RPY_RAPTOR = {"masters": [{"ranks": 1, "workers": [{"ranks": 1, "cores_per_rank": 1}]}]}

# The functions every variant runs, as the rhapsody-py driver defines them. Compiled in a
# namespace no import can find, so dill (raw RP's PythonTask) and cloudpickle (RHAPSODY)
# both ship them by value, like the driver's __main__ functions: a by-reference function
# would be re-imported in every raptor dispatch process (see the module docstring).
FNS: dict[str, Any] = {"__name__": "bench_radical_by_value"}
_FNS_SOURCE = """
def noop():
    return None


async def async_add(a, b):
    import asyncio

    await asyncio.sleep(0)
    return a + b
"""
exec(compile(_FNS_SOURCE, "<bench_radical functions>", "exec"), FNS)


def check_sums(results: Any) -> None:
    """``results``: (uid, return value) of ``async_add(1, 2)`` tasks; DONE must come with 3."""
    for uid, value in results:
        if value != 3:
            raise RuntimeError(f"{uid}: async_add returned {value!r}, not 3")


class RawRP:
    """The same pilot through RP's own API (the same environment fixes,
    applied here by hand as the notes say a raw RP user must)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.cond = threading.Condition()
        self.final: dict[str, str] = {}
        self.count = 0

    def start(self) -> float:
        t0 = time.perf_counter()
        envfix.apply_process_env()
        cfg = envfix.write_private_config(self.base / "config", CORES, None)
        old = os.environ.get(envfix.CONFIG_ENV)
        os.environ[envfix.CONFIG_ENV] = str(cfg)
        import radical.pilot as rp

        # RP's id counter closes a descriptor twice, which can abort this process; both
        # variants run here, and RHAPSODY's backend installs the fix anyway (id_counter)
        id_counter.install()
        self.rp = rp
        (self.base / "stdio").mkdir(parents=True, exist_ok=True)
        (self.base / "tmp").mkdir(parents=True, exist_ok=True)
        try:
            # RP's temp files under the run's folder, its addresses on loopback, as the backend does: a run leaves nothing in /tmp
            with envfix.spawn_env(self.base / "tmp", envfix.LOOPBACK):
                self.session = rp.Session(cfg={"base": str(self.base), "client_sandbox": str(self.base)})
                self.pmgr = rp.PilotManager(self.session)
                self.tmgr = rp.TaskManager(self.session)
            self.tmgr.register_callback(self._cb)
            pilot = self.pmgr.submit_pilots(rp.PilotDescription({**PILOT, "exit_on_error": False, "sandbox": str(self.base / "sandbox")}))
            self.tmgr.add_pilots(pilot)
            (self.raptor,) = pilot.submit_raptors([rp.TaskDescription({"mode": rp.RAPTOR_MASTER})])
            self.raptor.submit_workers([rp.TaskDescription({"mode": rp.RAPTOR_WORKER, "ranks": 1, "cores_per_rank": 1})])
        finally:
            if old is None:
                os.environ.pop(envfix.CONFIG_ENV, None)
            else:
                os.environ[envfix.CONFIG_ENV] = old
        self.run(executables=[self.exe("/bin/true")])
        return time.perf_counter() - t0

    def _cb(self, task: Any, state: str, *_: Any) -> None:
        if state in (self.rp.DONE, self.rp.FAILED, self.rp.CANCELED):
            with self.cond:
                self.final[task.uid] = state
                self.cond.notify_all()

    def exe(self, executable: str, arguments: list[str] | None = None) -> Any:
        self.count += 1
        uid = f"raw.{self.count:06d}"
        stdio = self.base / "stdio" / uid
        return self.rp.TaskDescription(
            {"uid": uid, "executable": executable, "arguments": arguments or [], "stdout": f"{stdio}.out", "stderr": f"{stdio}.err"}
        )

    def func(self, function: Any, *args: Any) -> Any:
        self.count += 1
        return self.rp.TaskDescription(
            {
                "uid": f"raw.{self.count:06d}",
                "mode": self.rp.TASK_FUNCTION,
                "function": self.rp.PythonTask(function, args, {}),
                "raptor_id": self.raptor.uid,
            }
        )

    def run(self, executables: list[Any] = (), functions: list[Any] = (), read_stdout: bool = False) -> list[Any]:  # type: ignore[assignment]
        tasks = []
        if executables:
            tasks += self.tmgr.submit_tasks(list(executables))
        if functions:
            tasks += self.raptor.submit_tasks(list(functions))
        uids = [t.uid for t in tasks]
        with self.cond:
            while not all(u in self.final for u in uids):
                self.cond.wait(1.0)
            states = [self.final.pop(u) for u in uids]
        bad = [(t, s) for t, s in zip(tasks, states, strict=True) if s != self.rp.DONE]
        if bad:
            t, s = bad[0]
            raise RuntimeError(f"{len(bad)} raw tasks not DONE: {s} {t.exception or t.stderr}")
        if read_stdout:
            for d in executables:
                if len(Path(d.stdout).read_bytes()) != 2**20:
                    raise RuntimeError(f"{d.uid}: stdout is not 1 MB")
        return tasks

    def stop_raptor(self) -> None:
        done = threading.Event()

        def stop() -> None:
            try:
                self.raptor.rpc("stop")
            finally:
                done.set()

        threading.Thread(target=stop, daemon=True).start()
        done.wait(15.0)

    def close(self) -> None:
        if hasattr(self, "raptor"):
            self.stop_raptor()
        self.session.close(terminate=True, download=False)
        envfix.close_manager_sockets(self.session, self.pmgr, self.tmgr)  # RP 1.103 leaves them listening


def third(n: int) -> tuple[int, int]:
    return n // 3, n - 2 * (n // 3)


def limit(n: int) -> float:
    """Seconds one round of ``n`` tasks may take: against hangs only."""
    return max(300.0, n * 2.0)


class RawVariant:
    """`RawRP` on one pilot, its blocking calls in a thread."""

    name = "raw"

    def __init__(self, base: Path) -> None:
        base.mkdir()
        self.rp = RawRP(base)

    async def start(self) -> float:
        return await asyncio.to_thread(self.rp.start)

    async def run(self, workload: str, n: int) -> None:
        await asyncio.wait_for(asyncio.to_thread(getattr(self, f"_{workload}"), n), limit(n))

    def _true(self, n: int) -> None:
        self.rp.run(executables=[self.rp.exe("/bin/true") for _ in range(n)])

    def _stdout_1mb(self, n: int) -> None:
        self.rp.run(executables=[self.rp.exe("/bin/sh", ONE_MB) for _ in range(n)], read_stdout=True)

    def _mixed(self, n: int) -> None:
        k, rest = third(n)
        funcs = [self.rp.func(FNS["noop"]) for _ in range(k)] + [self.rp.func(FNS["async_add"], 1, 2) for _ in range(k)]
        done = self.rp.run(executables=[self.rp.exe("/bin/true") for _ in range(rest)], functions=funcs)
        check_sums((t.uid, t.return_value) for t in done[rest + k :])  # executables, noops, then async_adds

    def _latency(self, n: int) -> None:
        for _ in range(n):
            self.rp.run(functions=[self.rp.func(FNS["noop"])])

    async def close(self) -> None:
        if not hasattr(self.rp, "session"):  # its start failed before RP had a session
            return
        try:
            await asyncio.to_thread(self.rp.close)
        finally:
            await asyncio.to_thread(envfix.sweep, self.rp.session.uid, 10.0)


class RhapsodyVariant:
    """The same pilot through a RHAPSODY Session and RadicalExecutionBackend."""

    name = "rhapsody"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.session: Session | None = None

    async def start(self) -> float:
        t0 = time.perf_counter()
        backend = RadicalExecutionBackend(resources=dict(PILOT), local_cores=CORES, raptor={"eager": True})
        self.session = Session(backends=[backend], work_dir=self.base)
        await self._run([ComputeTask(executable="/bin/true")])
        return time.perf_counter() - t0

    async def run(self, workload: str, n: int) -> None:
        await asyncio.wait_for(getattr(self, f"_{workload}")(n), limit(n))

    async def _run(self, tasks: list[ComputeTask], read_stdout: bool = False) -> None:
        assert self.session is not None
        await self.session.submit_tasks(tasks)
        await wait_all(self.session, tasks)
        bad = [t for t in tasks if t.state.value != "DONE"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks did not end DONE: {bad[0].exception!r}")
        check_sums((t.uid, t.return_value) for t in tasks if t.function is FNS["async_add"])
        if read_stdout and any(len(t.stdout or "") != 2**20 for t in tasks):
            raise RuntimeError("a task's stdout is not 1 MB")

    async def _true(self, n: int) -> None:
        await self._run([ComputeTask(executable="/bin/true") for _ in range(n)])

    async def _stdout_1mb(self, n: int) -> None:
        await self._run([ComputeTask(executable="/bin/sh", arguments=ONE_MB) for _ in range(n)], read_stdout=True)

    async def _mixed(self, n: int) -> None:
        k, rest = third(n)
        tasks = [ComputeTask(function=FNS["noop"]) for _ in range(k)]
        tasks += [ComputeTask(function=FNS["async_add"], args=(1, 2)) for _ in range(k)]
        tasks += [ComputeTask(executable="/bin/true") for _ in range(rest)]
        await self._run(tasks)

    async def _latency(self, n: int) -> None:
        assert self.session is not None
        for _ in range(n):
            t = ComputeTask(function=FNS["noop"])
            await self.session.submit_tasks([t])
            await t

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class RhapsodyPyVariant:
    """The rhapsody-py driver process with its pilot (environment fixes RP needs,
    from the notes: PATH / VIRTUAL_ENV come with RhapsodyPy; the real core count in
    a private resource config; the client sandbox is its cwd)."""

    name = "rhapsody-py"

    def __init__(self, base: Path) -> None:
        base.mkdir()
        self.base = base
        cfg = envfix.write_private_config(base / "config", CORES, None)
        resources = {**PILOT, "exit_on_error": False, "sandbox": str(base / "sandbox")}
        options = {"resources": resources, "raptor_config": RPY_RAPTOR}
        self.driver = RhapsodyPy("radical", options=options, env={envfix.CONFIG_ENV: str(cfg)}, cwd=str(base))

    async def start(self) -> float:
        await asyncio.to_thread(ensure_python)  # building the venv is not part of first_task
        t0 = time.perf_counter()
        await self.driver.run("true", 1, START_LIMIT)
        return time.perf_counter() - t0

    async def run(self, workload: str, n: int) -> Elapsed:
        return await self.driver.run(workload, n, limit(n))

    async def close(self) -> None:
        try:
            await self.driver.close()
        finally:
            # what its pilot left behind: agent, raptor, bootstrap shell all run under its folder
            await asyncio.to_thread(envfix.sweep, str(self.base), 10.0)


Variant = RawVariant | RhapsodyVariant | RhapsodyPyVariant
WORKLOADS = ("true", "stdout_1mb", "mixed", "latency")


async def one_pilot(rec: Recorder, variant: Variant, workloads: list[str]) -> None:
    """Start ``variant``'s pilot (timed: ``first_task``), run each workload once on it,
    tear it down. A variant whose pilot failed to start is not started again."""
    first = rec.result("first_task", variant.name, 1)
    if first.error:
        return

    async def start(_: int) -> Elapsed:  # the variant times its own start (rhapsody-py's venv build is left out)
        return Elapsed(await asyncio.wait_for(variant.start(), START_LIMIT))

    try:
        await rec.once("first_task", variant.name, 1, start)
        if first.error:
            return
        for workload in workloads:
            await rec.once(workload, variant.name, getattr(rec.args, f"n_{workload}"), functools.partial(variant.run, workload))
    finally:
        try:
            await variant.close()
        except Exception as exc:  # noqa: BLE001 - shown with the figures; the next pilot still runs
            first.extra["close_error"] = f"{type(exc).__name__}: {exc}"[:200]
            print(f"  closing {variant.name}'s pilot FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


async def main() -> None:
    args = parse_args(__doc__ or "", DEFAULT_N, QUICK_N)
    rec = Recorder("radical", args)
    work = Path(scratch_dir("rhapsody-bench-radical-"))
    workloads = [w for w in WORKLOADS if rec.wanted(w)]
    kinds: list[type[Variant]] = [RawVariant, RhapsodyVariant, RhapsodyPyVariant]
    if args.quick:
        for workload in ("first_task", *workloads):
            rec.skip(workload, "rhapsody-py", 1 if workload == "first_task" else getattr(args, f"n_{workload}"), QUICK_SKIP)
        kinds.remove(RhapsodyPyVariant)
    try:
        for round_no in range(args.repeats):
            for kind in kinds:
                await one_pilot(rec, kind(work / f"{kind.name}-{round_no}"), workloads)
    finally:
        rec.finish()
        if not os.environ.get("RHAPSODY_KEEP_BENCH_DIR"):  # pilot sandboxes, task outputs: tens of MB per run
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
