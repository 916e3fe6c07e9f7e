"""Entry point ``radical_pilot``: light on purpose, it never imports radical.pilot."""

from __future__ import annotations

from rhapsody.hookspecs import hookimpl
from rhapsody.registry.records import BackendRecord


@hookimpl
def rhapsody_register_backends() -> list[BackendRecord]:
    return [
        BackendRecord(
            name="radical_pilot",
            backend_class="rhapsody_radical.backend:RadicalExecutionBackend",
            summary="a RADICAL-Pilot pilot: executables through the agent, Python functions through raptor",
            engine_check="rhapsody_radical.plugin:engine_problem",
        )
    ]


def engine_problem() -> str | None:
    """None if radical.pilot imports and its helper commands are reachable, else why not."""
    import importlib.util  # noqa: PLC0415
    import shutil  # noqa: PLC0415

    from rhapsody_radical.environment import interpreter_bin  # noqa: PLC0415

    if importlib.util.find_spec("radical.pilot") is None:
        return "radical.pilot is not installed: pip install 'radical.pilot>=1.103,<1.104'"
    if shutil.which("radical-pilot-bridge", path=interpreter_bin()) is None:
        return f"radical-pilot-bridge is not in {interpreter_bin()}: radical.pilot must be installed in the interpreter's environment"
    return None
