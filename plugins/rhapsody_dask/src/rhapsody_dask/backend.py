"""``DaskExecutionBackend``: RHAPSODY on Dask distributed (see `engine`)."""

from __future__ import annotations

from typing import Any, cast

from distributed import Client

from rhapsody.execution.backend import Backend
from rhapsody_dask.cluster import ClusterSettings, DaskConfigurationError
from rhapsody_dask.engine import DaskEngine

__all__ = ["DaskConfigurationError", "DaskExecutionBackend"]


class DaskExecutionBackend(Backend):
    """Runs RHAPSODY tasks on Dask distributed.

    - neither ``cluster`` nor ``client``: start a ``LocalCluster(**resources)``
      (any LocalCluster / worker keyword) listening on 127.0.0.1 unless
      ``host`` says otherwise, dashboard included, and own it: shutdown
      closes it. A worker that dies fails the task it was running (pass
      ``retries`` per task to rerun it); tasks only queued there run elsewhere.
    - ``cluster``: a Dask cluster object (sync or asynchronous, e.g. a
      ``LocalCluster``, a dask-jobqueue or Kubernetes cluster) or a scheduler
      address ``"tcp://host:8786"``. The backend connects an asynchronous
      client of its own to it and closes only that client.
    - ``client``: a ``distributed.Client``. An asynchronous client on the
      running event loop is used as-is; a synchronous one is bridged through
      a companion asynchronous client to the same scheduler (same security),
      which is the only one the backend closes.

    Positional arguments follow rhapsody-py 0.6: ``(resources, name, cluster,
    client)``; ``DaskExecutionBackend.create(...)`` takes the same arguments
    and returns the started backend.

    ``connect_timeout`` bounds connecting to an existing scheduler and
    ``start_timeout`` starting a LocalCluster. Bad combinations raise
    `DaskConfigurationError` at ``await backend``, never here.
    """

    def __init__(
        self,
        resources: dict[str, Any] | None = None,
        name: str = "dask",
        cluster: Any = None,
        client: Any = None,
        *,
        connect_timeout: float = 10.0,
        start_timeout: float = 120.0,
    ) -> None:
        # positional order is rhapsody-py 0.6's (resources, name, cluster, client);
        # a cluster or client object in the name's place is a mistake, not a name
        if not isinstance(name, str):
            raise TypeError(
                f"DaskExecutionBackend's second argument is the backend name (a str), got {type(name).__name__}; "
                "pass cluster= / client= by keyword"
            )
        if "://" in name:
            raise ValueError(f"name={name!r} looks like a scheduler address; pass it as cluster={name!r}")
        for label, value in (("connect_timeout", connect_timeout), ("start_timeout", start_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{label} must be a positive number of seconds, got {value!r}")
        settings = ClusterSettings(resources, cluster, client, connect_timeout, start_timeout)
        super().__init__(DaskEngine(settings), name)

    @property
    def _dask(self) -> DaskEngine:
        return cast(DaskEngine, self.engine)

    @property
    def client(self) -> Client | None:
        """The asynchronous client tasks are submitted through (while started)."""
        connection = self._dask.connection
        return None if connection is None else connection.client

    @property
    def cluster(self) -> Any:
        """The LocalCluster this backend started, or the cluster it was given."""
        return self._dask.cluster
