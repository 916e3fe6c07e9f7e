"""What RADICAL-Pilot 1.103 needs from the process environment, and the
cleanup it does not do itself. Nothing here imports radical.pilot.

RP starts helper commands (``radical-pilot-bridge``, the agent bootstrapper
under ``/bin/bash -l``) by name, so the interpreter's ``bin/`` must be first
on PATH and ``VIRTUAL_ENV`` must name the venv. Its stock ``local.localhost``
config claims 8 fake cores; a private resource config with the real cores is
used unless the user has an RP configuration of their own. RP's processes
write temporary files under ``$TMPDIR``, advertise the address of the
interface ``$RADICAL_DEFAULT_IFACE`` names and bind every interface unless
`loopback` is active: all of it is set for the processes a backend starts
(`spawn_env`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rhapsody.engine.host import core_count
from rhapsody_radical import loopback

CONFIG_ENV = "RADICAL_CONFIG_USER_DIR"
#: the network interface whose address RP's processes advertise (radical.utils' DefaultConfig)
IFACE_ENV = "RADICAL_DEFAULT_IFACE"
LOOPBACK = "lo"
# radical.utils reads user configs from <RADICAL_CONFIG_USER_DIR or HOME>/.radical/pilot/configs/
_CONFIG_SUBDIR = Path(".radical") / "pilot" / "configs"

# os.environ is process-wide: serialise the backends that touch it
ENV_LOCK = threading.RLock()


def interpreter_bin() -> str:
    """The ``bin/`` directory of the running interpreter (the venv's, if any)."""
    return os.path.dirname(os.path.abspath(sys.executable))


def real_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):
        return None


def apply_process_env() -> dict[str, str | None]:
    """Put the interpreter's bin/ first on PATH and set VIRTUAL_ENV when running
    in a venv. Returns the previous values of what was changed."""
    changed: dict[str, str | None] = {}
    bindir = interpreter_bin()
    path = os.environ.get("PATH", "")
    parts = path.split(os.pathsep) if path else []
    if not parts or os.path.abspath(parts[0]) != bindir:
        changed["PATH"] = path
        os.environ["PATH"] = os.pathsep.join([bindir, *[p for p in parts if os.path.abspath(p) != bindir]])
    if sys.prefix != sys.base_prefix and os.environ.get("VIRTUAL_ENV") != sys.prefix:
        changed["VIRTUAL_ENV"] = os.environ.get("VIRTUAL_ENV")
        os.environ["VIRTUAL_ENV"] = sys.prefix
    return changed


@contextlib.contextmanager
def spawn_env(tmpdir: Path, iface: str | None, bind: str | None = None) -> Iterator[None]:
    """``TMPDIR`` (and ``RADICAL_DEFAULT_IFACE`` when ``iface`` is given) for
    the RP processes started inside the block: its bridges and components, and
    through them the pilot agent. RP 1.103 writes ``rp.agent_cfg.*``, psij a
    ``*.nodelist`` and the agent an ``<sid>/`` directory into the temp dir and
    leaves them there. With ``bind``, RP's sockets in those processes (and in
    this one, inside the block) bind that address (`loopback`). Call with
    `ENV_LOCK` held."""
    tempfile.gettempdir()  # fix this process's own temp dir first: it must not follow
    saved = {key: os.environ.get(key) for key in ("TMPDIR", IFACE_ENV, "PYTHONPATH", loopback.MARKER)}
    os.environ["TMPDIR"] = str(tmpdir)
    if iface:
        os.environ[IFACE_ENV] = iface
    if bind:
        loopback.install()
        loopback.activate(os.environ, bind)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def close_manager_sockets(*managers: Any) -> None:
    """RP 1.103's ``ComponentManager.close`` stops the listener of its
    registration pipe but never closes the pipe's socket: the session, its
    PilotManager and its TaskManager each leave one TCP port listening in this
    process after ``Session.close``. Close them (RP internals, guarded)."""
    for manager in managers:
        sock = getattr(getattr(getattr(manager, "_cmgr", None), "_pipe", None), "_sock", None)
        if sock is not None and not getattr(sock, "closed", True):
            with contextlib.suppress(Exception):
                sock.close(linger=0)


def user_has_rp_config() -> str | None:
    """Where the user's own RP configuration lives, or None if they have none."""
    if os.environ.get(CONFIG_ENV):
        return f"${CONFIG_ENV}={os.environ[CONFIG_ENV]}"
    home = os.environ.get("HOME")
    if home and (Path(home) / _CONFIG_SUBDIR / "resource_local.json").is_file():
        return str(Path(home) / _CONFIG_SUBDIR / "resource_local.json")
    return None


def write_private_config(root: Path, cores: int, memory_mb: int | None, gpus: int | None = 0) -> Path:
    """A config dir whose ``resource_local.json`` declares ``cores`` real cores
    and ``gpus`` GPUs (None: unknown, RP's stock value stays) for
    ``local.localhost``; other user config files in ``$HOME`` are copied so
    they stay visible. Returns the dir to put in ``RADICAL_CONFIG_USER_DIR``."""
    target = root / _CONFIG_SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    home = os.environ.get("HOME")
    if home and (Path(home) / _CONFIG_SUBDIR).is_dir():
        for src in (Path(home) / _CONFIG_SUBDIR).glob("*.json"):
            shutil.copy(src, target / src.name)
    # RP's FORK resource manager refuses more cores than the machine has unless
    # the config says the resources are fake: only then is oversubscription possible
    local: dict[str, object] = {"cores_per_node": cores, "fake_resources": cores > core_count()}
    if gpus is not None:
        local["gpus_per_node"] = gpus
    if memory_mb:
        local["mem_per_node"] = memory_mb
    (target / "resource_local.json").write_text(json.dumps({"localhost": local}, indent=2))
    return root


def url_path(url: object) -> Path | None:
    """Local filesystem path of an RP sandbox URL (``file://localhost/...``)."""
    if url is None:
        return None
    text = str(url)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") and parsed.path:
        return Path(parsed.path)
    return None


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt))\b.*")
# RP logs exceptions it caught and survived (e.g. probing launch methods:
# "envp excepted <class 'ValueError'>(mpirun not found ...)"): not the reason it failed
_CAUGHT = re.compile(r"excepted <class '(?:[\w.]*\.)?(\w+)'>\((.*)\)\s*$")
# bootstrap_0.sh: "agent <pid> is final (<exit code>)" once the agent process ended
_AGENT_FINAL = re.compile(r"^agent (\d+) is final \((\d+)\)\s*$", re.M)


def agent_exit(pilot_sandbox: Path | None) -> str:
    """How the agent_0 process ended, from ``bootstrap_0.out``: "" if it is
    still running, exited 0, or the file is not there."""
    if pilot_sandbox is None:
        return ""
    try:
        text = (pilot_sandbox / "bootstrap_0.out").read_text(errors="replace")
    except OSError:
        return ""
    found = _AGENT_FINAL.findall(text)
    if not found:
        return ""
    pid, code = found[-1][0], int(found[-1][1])
    if code > 128:
        try:
            how = f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            how = f"exit code {code}"
        return f"agent process {pid} died, {how}"
    return f"agent process {pid} died with exit code {code}" if code else ""


def agent_error_text(pilot_sandbox: Path | None, limit: int = 1200) -> str:
    """The agent's own account of why it failed: the last exception line of the
    agent/bootstrap ``*.err`` files in the pilot sandbox, then their tails."""
    if pilot_sandbox is None or not pilot_sandbox.is_dir():
        return ""
    names = ["agent_0.err", "bootstrap_0.err", "agent_0.out", "bootstrap_0.out"]
    found: list[tuple[str, str]] = []
    for name in names:
        path = pilot_sandbox / name
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            found.append((name, text))
    if not found:
        return ""
    headline = ""
    for _, text in found:
        caught = {f"{m.group(1)}: {m.group(2)}" for m in map(_CAUGHT.search, text.splitlines()) if m}
        for line in reversed(text.splitlines()):
            if _ERROR_LINE.match(line) and line.strip() not in caught:
                headline = line.strip()
                break
        if headline:
            break
    parts = [headline] if headline else []
    for name, text in found[:1]:
        tail = text if len(text) <= limit else "..." + text[-limit:]
        parts.append(f"--- {name} ({pilot_sandbox / name}) ---\n{tail}")
    return "\n".join(parts)


def _matches(proc: object, marker: str) -> bool:
    import psutil  # noqa: PLC0415

    assert isinstance(proc, psutil.Process)
    try:
        if marker in " ".join(proc.cmdline()):
            return True
        # agent components rename themselves (rp.agent_executing.0000 ...) but
        # run in the pilot sandbox, whose path holds the session id
        if marker in proc.cwd():
            return True
        env = proc.environ()
    except (psutil.Error, OSError):
        return False
    return any(marker in env.get(key, "") for key in ("RP_SESSION_SANDBOX", "RP_PILOT_SANDBOX", "RP_TASK_SANDBOX"))


def processes_of(marker: str) -> list[int]:
    """Pids (other than this process) whose command line, working directory or
    RP sandbox variables mention ``marker`` (a session sandbox path or session id)."""
    import psutil  # noqa: PLC0415

    me = os.getpid()
    return [p.pid for p in psutil.process_iter() if p.pid != me and _matches(p, marker)]


def sweep(marker: str, grace: float = 10.0) -> list[int]:
    """Wait up to ``grace`` s for RP's own teardown, then SIGTERM and SIGKILL
    what is left of this session (RP leaves raptor workers and the bootstrap
    shell behind when a pilot is torn down with function tasks still running).
    Returns the pids that had to be killed."""
    deadline = time.monotonic() + grace
    left = processes_of(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = processes_of(marker)
    if not left:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + 3.0
        while time.monotonic() < end and processes_of(marker):
            time.sleep(0.1)
        if not processes_of(marker):
            break
    return left
