"""A workflow-shaped run with telemetry on, then its report.

    python examples/telemetry_run.py [OUT_DIR]
    # needs rhapsody-core, rhapsody-concurrent, rhapsody-dask, rhapsody-telemetry

Two backends (the local pool and a 2-worker Dask LocalCluster) run 80 tasks of
uneven length, a few of which fail or are cancelled, with live progress on
stderr; the JSONL checkpoint goes to OUT_DIR (default ``telemetry-run/``) and
``rhapsody report`` turns it into ``OUT_DIR/<session>.report.html``. The charts
in docs/telemetry.md come from a run of this script.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

from rhapsody import ComputeTask, Session
from rhapsody_concurrent.backend import ConcurrentExecutionBackend
from rhapsody_dask.backend import DaskExecutionBackend


def simulate(seconds: float) -> float:
    """CPU work for about ``seconds`` (a stand-in for a simulation step)."""
    end, x = time.perf_counter() + seconds, 0.0
    while time.perf_counter() < end:
        x += 1.0
    return x


def unstable(step: int) -> int:
    raise RuntimeError(f"step {step} diverged")


async def main(out: Path) -> Path:
    random.seed(7)
    local = await ConcurrentExecutionBackend(name="local", cores=2)
    dask = await DaskExecutionBackend(resources={"n_workers": 2, "threads_per_worker": 1}, name="dask")
    async with Session(backends=[local, dask], work_dir=out / "work", progress=True) as session:
        telemetry = await session.start_telemetry(checkpoint_path=out, checkpoint_interval=1.0, resource_poll_interval=0.5)
        tasks = [
            ComputeTask(function=simulate, args=(random.uniform(0.05, 0.5),), backend=random.choice(["local", "dask"])) for _ in range(70)
        ]
        tasks += [ComputeTask(executable="/bin/sleep", arguments=["0.2"], backend="local") for _ in range(6)]
        tasks += [ComputeTask(function=unstable, args=(i,), backend="dask") for i in range(2)]
        tasks += [ComputeTask(executable="/bin/sh", arguments=["-c", "exit 2"], backend="local")]
        slow = ComputeTask(executable="/bin/sleep", arguments=["600"], backend="local")
        await session.submit_tasks([*tasks, slow])
        await session.wait_tasks(tasks, timeout=600)
        await session.cancel_tasks([slow])
    print(telemetry.summary()["tasks"], file=sys.stderr)
    return Path(telemetry.checkpoint_file)


if __name__ == "__main__":
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "telemetry-run").absolute()
    checkpoint = asyncio.run(main(out_dir))
    rhapsody = Path(sys.executable).with_name("rhapsody")
    subprocess.run([str(rhapsody), "report", str(checkpoint)], check=True, timeout=600)
