"""Registers the Dragon backends with RHAPSODY. Light: never imports Dragon."""

from __future__ import annotations

from rhapsody import BackendRecord, hookimpl

_CHECK = "rhapsody_dragon.plugin:engine_problem"
_BATCH = "rhapsody_dragon.batch:DragonBatchExecutionBackend"


@hookimpl
def rhapsody_register_backends() -> list[BackendRecord]:
    return [
        BackendRecord(
            name="dragon",
            backend_class=_BATCH,
            engine_check=_CHECK,
            aliases=("DragonExecutionBackend", "DragonExecutionBackendV3"),  # attrs converter=tuple
            summary="Dragon V3: dragon.workflows.batch.Batch (default Dragon backend)",
        ),
        BackendRecord(name="dragon_v3", backend_class=_BATCH, engine_check=_CHECK, summary="Dragon V3: dragon.workflows.batch.Batch"),
        BackendRecord(
            name="dragon_v2",
            backend_class="rhapsody_dragon.pool:DragonPoolExecutionBackend",
            engine_check=_CHECK,
            aliases=("DragonExecutionBackendV2",),
            summary="Dragon V2: persistent pool of Dragon worker processes, for many small function tasks",
        ),
        BackendRecord(
            name="dragon_v1",
            backend_class="rhapsody_dragon.processes:DragonProcessExecutionBackend",
            engine_check=_CHECK,
            aliases=("DragonExecutionBackendV1",),
            summary="Dragon V1: one native Dragon process per task, ProcessGroup for multi-rank jobs",
        ),
    ]


def engine_problem() -> str | None:
    """None when Dragon (with its Batch extras) imports here, else why not."""
    try:
        import dragon  # noqa: PLC0415
        import dragon.native.process  # noqa: F401, PLC0415
    except ImportError as exc:
        return f"the Dragon runtime is not importable ({exc}); pip install 'dragonhpc[telemetry,batch]'"
    return None
