"""The third column: the same workloads through the public ``rhapsody-py`` 0.6.0
release, which cannot share a process (nor an import name) with RHAPSODY.

`ensure_python` makes, once, a venv under
``~/.cache/rhapsody-bench/rhapsody-py-0.6.0`` with ``pip install rhapsody-py==0.6.0
"dask[distributed]"`` (Dask pinned to the version this environment runs, so the
engine is the same) and returns its interpreter; ``$RHAPSODY_PY_PYTHON`` points
at an existing one instead. `RhapsodyPy` keeps one driver process
(``_rpy_driver.py``) alive with the old Session + backend so its rounds
interleave with the raw / RHAPSODY rounds; the driver times submit + wait itself
and the figure comes back as an `Elapsed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.common import Elapsed

VERSION = "0.6.0"
DRIVER = Path(__file__).resolve().parent / "_rpy_driver.py"
QUICK_SKIP = "skipped in --quick mode (run without --quick to measure rhapsody-py)"


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rhapsody-bench" / f"rhapsody-py-{VERSION}"


def _requirements() -> list[str]:
    try:
        dask = f"dask[distributed]=={metadata.version('distributed')}"
    except metadata.PackageNotFoundError:
        dask = "dask[distributed]"
    return [f"rhapsody-py=={VERSION}", dask]


def ensure_python() -> str:
    """The rhapsody-py interpreter, creating its venv first if it is missing."""
    override = os.environ.get("RHAPSODY_PY_PYTHON")
    if override:
        if not os.path.exists(override):
            raise RuntimeError(f"RHAPSODY_PY_PYTHON={override} does not exist")
        return override
    root = venv_dir()
    python = root / "bin" / "python"
    marker = root / ".rhapsody-bench-complete"
    if marker.exists():
        return str(python)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another benchmark may be building it right now
        if marker.exists():
            return str(python)
        shutil.rmtree(root, ignore_errors=True)  # a half-built one from an interrupted run
        print(f"  creating the rhapsody-py venv at {root} (once)", file=sys.stderr, flush=True)
        steps = [
            [sys.executable, "-m", "venv", str(root)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *_requirements()],
            [str(python), "-c", "import rhapsody.backends, distributed"],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
                raise RuntimeError(f"building the rhapsody-py venv failed at {' '.join(step[:4])}: {tail}")
        marker.write_text(" ".join(_requirements()) + "\n")
    return str(python)


class RhapsodyPy:
    """One long-lived rhapsody-py driver (``backend``: "concurrent" or "dask")."""

    def __init__(self, backend: str, workers: int = 2) -> None:
        self.backend, self.workers = backend, workers
        self.proc: asyncio.subprocess.Process | None = None

    async def _start(self) -> None:
        python = await asyncio.to_thread(ensure_python)
        self.proc = await asyncio.create_subprocess_exec(
            python,
            str(DRIVER),
            self.backend,
            str(self.workers),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # its logs go to our stderr
            start_new_session=True,
            limit=2**20,
        )
        reply = await self._reply(180)
        if not reply.get("ready"):
            raise RuntimeError(f"rhapsody-py {self.backend} backend did not start: {reply.get('error')}")

    async def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            code = await self.proc.wait()
            self.proc = None
            raise RuntimeError(f"rhapsody-py driver exited {code}")
        return json.loads(line)

    async def run(self, workload: str, n: int, timeout: float) -> Elapsed:
        if self.proc is None:
            await self._start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"workload": workload, "n": n}) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            reply = await self._reply(timeout)
        except asyncio.TimeoutError:
            await self._kill()
            raise RuntimeError(f"rhapsody-py did not finish {n} {workload} tasks within {timeout:.0f} s") from None
        if "error" in reply:
            raise RuntimeError(f"rhapsody-py: {reply['error']}")
        return Elapsed(float(reply["seconds"]), reply.get("extra") or {})

    async def _kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            await self.proc.wait()
            self.proc = None

    async def close(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(b'{"quit": true}\n')
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 90)
        # the driver's own children (Dask workers) live in its session: end them too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)
        self.proc = None
