"""The third column: the same workloads through the public ``rhapsody-py`` 0.6.0
release, which cannot share a process (nor an import name) with RHAPSODY.

`ensure_python` makes, once, a venv under
``~/.cache/rhapsody-bench/rhapsody-py-0.6.0`` with ``pip install rhapsody-py==0.6.0``
plus the engines (Dask, Dragon, RADICAL-Pilot, each pinned to the version this
environment runs, so the engine is the same) and returns its interpreter; an
existing venv is reinstalled only when a caller pins an engine to another
version than it holds (an engine the caller does not have, any version does). ``$RHAPSODY_PY_PYTHON`` points
at an existing one instead. `RhapsodyPy` keeps one driver process
(``_rpy_driver.py``) alive with the old Session + backend so its rounds
interleave with the raw / RHAPSODY rounds; the driver times submit + wait itself
and the figure comes back as an `Elapsed`. The driver talks JSON lines over a Unix
socket, not its stdin/stdout: under the ``dragon`` launcher those are the
launcher's, which prints there too.
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

from benchmarks.common import Elapsed, scratch_dir

VERSION = "0.6.0"
DRIVER = Path(__file__).resolve().parent / "_rpy_driver.py"
QUICK_SKIP = "skipped in --quick mode (run without --quick to measure rhapsody-py)"


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rhapsody-bench" / f"rhapsody-py-{VERSION}"


def _pinned(spec: str, dist: str) -> str:
    """``spec==<version of dist installed here>``, or ``spec`` unpinned if it is not installed."""
    try:
        return f"{spec}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return spec


#: what the venv holds: (requirement, the distribution whose version pins it)
_ENGINES = (
    ("dask[distributed]", "distributed"),
    ("dragonhpc[telemetry,batch]", "dragonhpc"),  # Batch imports the telemetry extra's packages unconditionally
    ("radical.pilot", "radical.pilot"),
    ("radical.utils", "radical.utils"),
)


def _requirements() -> list[str]:
    return [f"rhapsody-py=={VERSION}", *(_pinned(spec, dist) for spec, dist in _ENGINES)]


def _lacking(wanted: list[str], held: list[str]) -> list[str]:
    """What of ``wanted`` the venv's ``held`` list does not satisfy: a pinned
    requirement needs that very pin, an unpinned one any version."""
    return sorted(w for w in wanted if w not in held and ("==" in w or not any(h.startswith(w + "==") for h in held)))


def _held(python: Path) -> list[str]:
    """The requirements with the versions the venv at ``python`` has now."""
    script = "import sys, importlib.metadata as m; print(' '.join(m.version(d) for d in sys.argv[1:]))"
    proc = subprocess.run([str(python), "-c", script, *(d for _, d in _ENGINES)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"reading the rhapsody-py venv's versions failed: {proc.stderr.strip()[-300:]}")
    return [f"rhapsody-py=={VERSION}", *(f"{spec}=={v}" for (spec, _), v in zip(_ENGINES, proc.stdout.split(), strict=True))]


def ensure_python() -> str:
    """The rhapsody-py interpreter, creating its venv first if it is missing and
    installing what an older venv lacks (the marker lists what it holds)."""
    override = os.environ.get("RHAPSODY_PY_PYTHON")
    if override:
        if not os.path.exists(override):
            raise RuntimeError(f"RHAPSODY_PY_PYTHON={override} does not exist")
        return override
    root = venv_dir()
    python = root / "bin" / "python"
    marker = root / ".rhapsody-bench-complete"
    wanted = _requirements()

    def missing() -> list[str]:
        return _lacking(wanted, marker.read_text().split()) if marker.exists() else wanted

    if not missing():
        return str(python)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another benchmark may be building it right now
        todo = missing()
        if not todo:
            return str(python)
        steps = []
        if marker.exists():
            print(f"  adding {' '.join(todo)} to the rhapsody-py venv at {root}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)  # a half-built one from an interrupted run
            print(f"  creating the rhapsody-py venv at {root} (once)", file=sys.stderr, flush=True)
            steps.append([sys.executable, "-m", "venv", str(root)])
        steps += [
            # everything at once, so pip resolves the new engines together with what is there
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
            [str(python), "-c", "import rhapsody.backends, distributed, dragon.workflows.batch, radical.pilot"],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
                raise RuntimeError(f"building the rhapsody-py venv failed at {' '.join(step[:4])}: {tail}")
        marker.write_text(" ".join(_held(python)) + "\n")
    return str(python)


class RhapsodyPy:
    """One long-lived rhapsody-py driver. ``backend``: "concurrent", "dask", "dragon"
    or "radical"; ``options`` go to the old backend's constructor (see the driver);
    ``env`` is added to the driver's environment; ``cwd`` is where it runs (default:
    a scratch directory removed on close)."""

    def __init__(
        self,
        backend: str,
        workers: int = 2,
        options: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.backend, self.workers, self.options = backend, workers, options or {}
        self.extra_env, self.cwd = env or {}, cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.scratch: str | None = None

    def _env(self, python: str) -> dict[str, str]:
        venv = os.path.dirname(os.path.dirname(python))
        # Not PYTHONPATH: it may point at this checkout; the driver must import the old release.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if self.backend == "dragon":
            # This benchmark itself runs inside a Dragon runtime: without its DRAGON_* variables
            # the launcher starts a runtime of its own instead of attaching the driver to ours.
            env = {k: v for k, v in env.items() if not k.startswith("DRAGON_")}
            env["DRAGON_DEFAULT_SEG_SZ"] = os.environ.get("DRAGON_DEFAULT_SEG_SZ", str(256 << 20))
            env["DRAGON_INF_SEG_SZ"] = os.environ.get("DRAGON_INF_SEG_SZ", str(128 << 20))
        elif self.scratch is not None:
            # its temp files (RP's agent config and node list, rhapsody-py's session folder) go
            # with the driver's scratch folder, not into /tmp; Dragon keeps its own under TMPDIR
            env["TMPDIR"] = self.scratch
        # the engines start helpers by name (dragon-config, radical-pilot-bridge, ...): the venv's bin/ first
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = venv
        return {**env, **self.extra_env}

    async def _start(self) -> None:
        python = await asyncio.to_thread(ensure_python)
        self.scratch = scratch_dir("rhapsody-py-")
        sock = os.path.join(self.scratch, "driver.sock")
        connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not connected.done():
                connected.set_result((reader, writer))

        server = await asyncio.start_unix_server(on_connect, sock, limit=2**20)
        cmd = [python, str(DRIVER), self.backend, str(self.workers), sock, json.dumps(self.options)]
        if self.backend == "dragon":
            # its own launcher, hence its own runtime and Batch; the launcher setsid()s itself
            # (it hangs when started as a session leader), so its pgid is its pid
            cmd = [os.path.join(os.path.dirname(python), "dragon"), *cmd]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),  # its (and the launcher's) prints go to our stderr, not our table
            stderr=None,
            cwd=self.cwd or self.scratch,
            env=self._env(python),
            start_new_session=self.backend != "dragon",
        )
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            await asyncio.wait({connected, exited}, timeout=300, return_when=asyncio.FIRST_COMPLETED)
            if not connected.done():
                raise RuntimeError(f"rhapsody-py {self.backend} driver did not connect (exit code {self.proc.returncode})")
            self.reader, self.writer = connected.result()
            reply = await self._reply(300)
            if not reply.get("ready"):
                raise RuntimeError(f"rhapsody-py {self.backend} backend did not start: {reply.get('error')}")
        except BaseException:
            await self._kill()
            raise
        finally:
            server.close()
            exited.cancel()

    async def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.reader is not None and self.proc is not None
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:  # it died; a launcher may take a while to follow
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
            code = self.proc.returncode
            await self._kill()
            raise RuntimeError(f"rhapsody-py driver exited (exit code {code})")
        return json.loads(line)

    async def run(self, workload: str, n: int, timeout: float) -> Elapsed:
        if self.proc is None:
            await self._start()
        assert self.writer is not None
        self.writer.write((json.dumps({"workload": workload, "n": n}) + "\n").encode())
        await self.writer.drain()
        try:
            reply = await self._reply(timeout)
        except asyncio.TimeoutError:
            await self._kill()
            raise RuntimeError(f"rhapsody-py did not finish {n} {workload} tasks within {timeout:.0f} s") from None
        if "error" in reply:
            raise RuntimeError(f"rhapsody-py: {reply['error']}")
        return Elapsed(float(reply["seconds"]), reply.get("extra") or {})

    async def _kill(self) -> None:
        """End the driver and whatever it started (Dask workers, the Dragon runtime): they
        live in its process group."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 9)
            await self.proc.wait()
            self.proc = None
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.writer is not None:
            with contextlib.suppress(ConnectionError):
                self.writer.write(b'{"quit": true}\n')
                await self.writer.drain()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 90)
        await self._kill()
