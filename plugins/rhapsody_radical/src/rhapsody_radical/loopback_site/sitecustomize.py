"""Loaded at the start of every Python process RADICAL-Pilot starts for a
rhapsody_radical backend (this directory is on their ``PYTHONPATH``): RP's
sockets bind the address in ``$RHAPSODY_RADICAL_BIND`` (see
``rhapsody_radical.loopback``). A ``sitecustomize`` this one shadows still runs."""

import importlib.machinery
import importlib.util
import os
import sys

if os.environ.get("RHAPSODY_RADICAL_BIND"):
    try:
        from rhapsody_radical import loopback

        loopback.install()
    except Exception as exc:  # noqa: BLE001 - never stop an interpreter from starting
        print(f"rhapsody_radical: sockets not bound to loopback: {exc!r}", file=sys.stderr)


def _run_shadowed() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_run_shadowed()
