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

from rhapsody.engine.calls import call_packed
from rhapsody.engine.launch import LaunchSpec
from rhapsody.engine.process import CommandTable
from rhapsody_dask.running import announce, retract

#: the executables this worker process runs, by Dask key
_commands = CommandTable()


def run_function(topic: str, key: str, payload: bytes) -> bytes:
    """Call a function packed by `rhapsody.engine.calls.pack_call`; returns
    the packed `Outcome` (the function's own error travels inside it)."""
    worker = announce(topic, key)
    try:
        return call_packed(payload)
    finally:
        retract(worker, topic, key)


def run_executable(topic: str, key: str, spec: LaunchSpec) -> bytes | None:
    """Run an executable (``spec.uid`` is the Dask key); returns the packed
    `Outcome`, or None when it was stopped before it started."""
    worker = announce(topic, key)
    try:
        outcome = _commands.run(spec)
        return None if outcome is None else outcome.pack()
    finally:
        retract(worker, topic, key)


def stop(keys: list[str]) -> int:
    """Stop the executables of ``keys`` here (their whole process groups), or
    make sure they never start here. Run through ``Client.run``; returns how
    many running ones were signalled."""
    return sum(_commands.stop(key) for key in keys)
