"""Entry point of the ``dask`` backend. Light: it never imports Dask."""

from __future__ import annotations

from rhapsody.hookspecs import hookimpl
from rhapsody.registry import BackendRecord


@hookimpl
def rhapsody_register_backends() -> list[BackendRecord]:
    return [
        BackendRecord(
            name="dask",
            backend_class="rhapsody_dask.backend:DaskExecutionBackend",
            summary="Dask distributed: a LocalCluster it owns, or any existing Dask cluster, client or scheduler address",
            engine_check="rhapsody_dask.plugin:engine_problem",
        )
    ]


def engine_problem() -> str | None:
    """None when ``dask.distributed`` imports, else why it does not."""
    try:
        import distributed  # noqa: F401, PLC0415
    except Exception as exc:  # noqa: BLE001 - the failure is the answer
        return f"dask.distributed cannot be imported ({type(exc).__name__}: {exc}); pip install 'dask[distributed]'"
    return None
