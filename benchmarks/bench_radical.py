"""rhapsody-radical against raw RADICAL-Pilot TaskManager submission, same run.

python -m benchmarks.bench_radical [--quick] [--json FILE]

Two real local.localhost pilots of 2 cores each (one driven through raw
``rp.TaskManager``, one through a RHAPSODY Session + RadicalExecutionBackend),
both alive for the whole run so the throughput rounds interleave A/B/A/B.
``first_task``: seconds from creating the RP session / the backend to the first
``/bin/true`` being DONE (pilot start included; measured once per variant).
``true``: N ``/bin/true`` tasks submitted at once, until all are DONE.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import Recorder, parse_args
from rhapsody import ComputeTask, Session
from rhapsody_radical import environment as envfix
from rhapsody_radical.backend import RadicalExecutionBackend

DEFAULT_N = {"true": 200}
QUICK_N = {"true": 20}
PILOT = {"resource": "local.localhost", "runtime": 30, "cores": 2}


class RawRP:
    """The same pilot through RP's own API (same environment fixes, applied
    here by hand as the notes say a raw RP user must)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.done = threading.Condition()
        self.finals = 0

    def start(self) -> float:
        t0 = time.perf_counter()
        envfix.apply_process_env()
        cfg = envfix.write_private_config(self.base / "config", envfix.real_cores(), None)
        old = os.environ.get(envfix.CONFIG_ENV)
        os.environ[envfix.CONFIG_ENV] = str(cfg)
        import radical.pilot as rp  # noqa: PLC0415

        self.rp = rp
        try:
            self.session = rp.Session(cfg={"base": str(self.base), "client_sandbox": str(self.base)})
            self.pmgr = rp.PilotManager(self.session)
            self.tmgr = rp.TaskManager(self.session)
            self.tmgr.register_callback(self._cb)
            pilot = self.pmgr.submit_pilots(rp.PilotDescription({**PILOT, "exit_on_error": False, "sandbox": str(self.base / "sandbox")}))
            self.tmgr.add_pilots(pilot)
        finally:
            if old is None:
                os.environ.pop(envfix.CONFIG_ENV, None)
            else:
                os.environ[envfix.CONFIG_ENV] = old
        self.run(1)
        return time.perf_counter() - t0

    def _cb(self, task: object, state: str, *_: object) -> None:
        if state in (self.rp.DONE, self.rp.FAILED, self.rp.CANCELED):
            with self.done:
                self.finals += 1
                self.done.notify_all()

    def run(self, n: int) -> None:
        rp = self.rp
        with self.done:
            target = self.finals + n
        tasks = self.tmgr.submit_tasks([rp.TaskDescription({"executable": "/bin/true"}) for _ in range(n)])
        with self.done:
            while self.finals < target:
                self.done.wait(1.0)
        bad = [t for t in tasks if t.state != rp.DONE]
        if bad:
            raise RuntimeError(f"{len(bad)} raw tasks not DONE: {bad[0].state} {bad[0].stderr}")

    def close(self) -> None:
        self.session.close(terminate=True, download=False)


async def main() -> None:
    args = parse_args(__doc__ or "", DEFAULT_N, QUICK_N)
    rec = Recorder("radical", args)
    work = Path(tempfile.mkdtemp(prefix="rhapsody-bench-radical-"))
    raw = RawRP(work / "raw")
    (work / "raw").mkdir()

    try:
        seconds = await asyncio.to_thread(raw.start)
        rec.record("first_task", "raw", 1, seconds)
    except Exception as exc:  # noqa: BLE001
        rec.fail("first_task", "raw", 1, f"{type(exc).__name__}: {exc}")
        raw = None  # type: ignore[assignment]

    async def rh_run(session: Session, n: int) -> None:
        tasks = [ComputeTask(executable="/bin/true") for _ in range(n)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        bad = [t for t in tasks if t.state.value != "DONE"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks did not end DONE: {bad[0].exception!r}")

    t0 = time.perf_counter()
    backend = RadicalExecutionBackend(resources=dict(PILOT))
    session = Session(backends=[backend], work_dir=work / "rhapsody")
    backend.work_dir = session.work_dir
    try:
        await rh_run(session, 1)
        rec.record("first_task", "rhapsody", 1, time.perf_counter() - t0)
        variants = {"rhapsody": lambda n: rh_run(session, n)}
        if raw is not None:
            variants = {"raw": lambda n: asyncio.to_thread(raw.run, n), **variants}
        if rec.wanted("true"):
            await rec.ab("true", args.n_true, variants)
    except Exception as exc:  # noqa: BLE001
        rec.fail("first_task", "rhapsody", 1, f"{type(exc).__name__}: {exc}")
    finally:
        await session.close()
        if raw is not None:
            await asyncio.to_thread(raw.close)
            await asyncio.to_thread(envfix.sweep, raw.session.uid, 10.0)
    rec.finish()


if __name__ == "__main__":
    asyncio.run(main())
