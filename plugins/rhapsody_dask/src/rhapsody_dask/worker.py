"""What runs inside the Dask workers: one wrapper per task kind.

The client pickles these functions by reference, so ``rhapsody-dask`` must be
installed wherever the workers run (as any library a Dask task uses). They use
only RHAPSODY's engine-side helpers (standard library and cloudpickle):
functions go through `rhapsody.engine.calls`, executables through one
`rhapsody.engine.process.CommandTable` per worker process, and both hand back
a packed `rhapsody.engine.Outcome`, the one encoding every engine shares.

Each submission runs under its own Dask key, unique per submission; the
command table is keyed by it too, because a task uid may repeat (another
client of the same scheduler, or a task rebuilt with the uid of an old one).
"""

from __future__ import annotations

from typing import Any

from rhapsody.engine.calls import call_packed
from rhapsody.engine.launch import LaunchSpec
from rhapsody.engine.process import CommandTable
from rhapsody_dask.running import announce, retract

#: the executables this worker process runs, by Dask key
_commands = CommandTable()


# Each wrapper returns ``(worker address, packed Outcome)``: the address says
# where it ran also for a task that ended before its RUNNING announcement went out.


def run_function(topic: str, key: str, payload: bytes) -> tuple[str | None, bytes]:
    """Call a function packed by `rhapsody.engine.calls.pack_call`; the packed
    `Outcome` carries the function's own error."""
    worker = announce(topic, key)
    try:
        return _address(worker), call_packed(payload)
    finally:
        retract(worker, topic, key)


def run_executable(topic: str, key: str, spec: LaunchSpec) -> tuple[str | None, bytes | None]:
    """Run an executable (``spec.uid`` is the Dask key); the packed `Outcome`
    is None when it was stopped before it started."""
    worker = announce(topic, key)
    try:
        outcome = _commands.run(spec)
        return _address(worker), None if outcome is None else outcome.pack()
    finally:
        retract(worker, topic, key)


def _address(worker: Any) -> str | None:
    return None if worker is None else str(worker.address)


def stop(keys: list[str]) -> int:
    """Stop the executables of ``keys`` here (their whole process groups), or
    make sure they never start here. Run through ``Client.run``; returns how
    many running ones were signalled."""
    return sum(_commands.stop(key) for key in keys)
