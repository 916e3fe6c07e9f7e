"""Bind RADICAL-Pilot's ZMQ sockets to one address instead of every interface.

radical.utils 1.x hard-codes the bind address ``*``: ``zmq.utils.zmq_bind``
(every bridge, pipe and queue) binds ``tcp://*:<port>`` and the registry
``zmq.server.Server`` (and RP's ``Proxy``) defaults to ``tcp://*:10000-11000``;
no RP option changes it. `install` wraps both so that, while ``$MARKER`` holds
an address, they bind that address instead of ``*``.

The backend calls `install` in its own process and, for RP's processes (the
bridges, components, agent and raptor it starts), sets ``$MARKER`` and puts
`HOOK_DIR` first on ``PYTHONPATH``: its ``sitecustomize`` calls `install` when
those interpreters start. The tasks RP runs must not inherit either
(`scrub` for Python, `SCRUB_SHELL` for a task's shell). Standard library only:
every RP process imports it at start.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

#: the address RP's sockets bind to (unset: RP's own ``*``)
MARKER = "RHAPSODY_RADICAL_BIND"
#: the directory holding the ``sitecustomize`` that installs the wrappers
HOOK_DIR = str(Path(__file__).with_name("loopback_site"))
LOOPBACK_ADDRESS = "127.0.0.1"
_ANY = "tcp://*:"
_SERVER_DEFAULT = "tcp://*:10000-11000"  # radical.utils.zmq.server.Server's default url


def _bind_address() -> str | None:
    return os.environ.get(MARKER) or None


def _rewrite(url: str) -> str:
    address = _bind_address()
    return url.replace(_ANY, f"tcp://{address}:", 1) if address and url.startswith(_ANY) else url


class _BindTo:
    """A ZMQ socket whose ``bind`` goes to the chosen address (pyzmq sockets
    turn attribute assignment into socket options, so ``bind`` cannot be
    replaced on the socket itself)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def bind(self, url: str) -> Any:
        return self._sock.bind(_rewrite(url))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _patch_zmq_utils(module: ModuleType) -> None:
    original = module.zmq_bind
    if getattr(original, "__rhapsody_loopback__", False):
        return

    def zmq_bind(sock: Any) -> Any:
        return original(_BindTo(sock))

    zmq_bind.__rhapsody_loopback__ = True  # type: ignore[attr-defined]
    # pubsub, pipe and queue hold their own reference when imported before us
    for name, other in list(sys.modules.items()):
        if name.startswith("radical.") and getattr(other, "zmq_bind", None) is original:
            other.zmq_bind = zmq_bind  # type: ignore[attr-defined]


def _patch_zmq_server(module: ModuleType) -> None:
    server = module.Server
    original = server.__init__
    if getattr(original, "__rhapsody_loopback__", False):
        return

    def __init__(self: Any, url: str | None = None, uid: str | None = None, path: str | None = None) -> None:
        original(self, url=_rewrite(url or _SERVER_DEFAULT), uid=uid, path=path)

    __init__.__rhapsody_loopback__ = True  # type: ignore[attr-defined]
    server.__init__ = __init__


_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "radical.utils.zmq.utils": _patch_zmq_utils,
    "radical.utils.zmq.server": _patch_zmq_server,
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches a module of `_PATCHES` right after it is executed, before any
    other module can copy the names it defines."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Wrap radical.utils' bind helpers (now if imported, else when imported).
    Idempotent; the wrappers do nothing while ``$MARKER`` is unset."""
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def activate(environ: MutableMapping[str, str], address: str) -> None:
    """Make the processes started with ``environ`` bind ``address``."""
    environ[MARKER] = address
    path = environ.get("PYTHONPATH")
    environ["PYTHONPATH"] = os.pathsep.join([HOOK_DIR, path]) if path else HOOK_DIR


#: where the hook shows up: RP's bootstrap keeps the pilot's original
#: PYTHONPATH in _OLD_VIRTUAL_PYTHONPATH and rebuilds a task's from it
_PATH_VARS = ("PYTHONPATH", "_OLD_VIRTUAL_PYTHONPATH")


def scrub(environ: MutableMapping[str, str]) -> None:
    """Remove the marker and the hook from ``environ`` (for the tasks RP runs)."""
    environ.pop(MARKER, None)
    for var in _PATH_VARS:
        if var in environ:
            environ[var] = os.pathsep.join(e for e in environ[var].split(os.pathsep) if e != HOOK_DIR)
    if not environ.get("PYTHONPATH"):
        environ.pop("PYTHONPATH", None)


def _bash_literal(text: str) -> str:
    """``text`` single-quoted, always (``shlex.quote`` leaves a plain path bare,
    and a bare ``/`` would end a ``${var//pattern/}`` pattern)."""
    return "'" + text.replace("'", "'\\''") + "'"


# `scrub` for a task's bash script (RP's task scripts are bash): the quoted
# part of a ${var//pattern/} pattern matches literally
SCRUB_SHELL = (
    f"unset {MARKER}; for rh_v in {' '.join(_PATH_VARS)}; do "
    '[ -n "${!rh_v+x}" ] || continue; '
    f'rh_pp=":${{!rh_v}}:"; rh_pp=${{rh_pp//:{_bash_literal(HOOK_DIR)}:/:}}; rh_pp=${{rh_pp#:}}; export "$rh_v=${{rh_pp%:}}"; '
    'done; [ -n "$PYTHONPATH" ] || unset PYTHONPATH; unset rh_v rh_pp'
)
