"""Getting an asynchronous Dask client on the backend's event loop, from
whatever the user gave: nothing (start a LocalCluster), a cluster object (sync
or asynchronous), a scheduler address, or a client (sync or asynchronous).

A synchronous cluster or client lives on a loop thread of its own, and its
futures cannot be awaited on the backend's loop; the backend then opens a
companion asynchronous client to the same scheduler, with the same security.
Whatever the backend opened it closes; what the user gave it never.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import attrs
import distributed
from distributed import Client, LocalCluster

from rhapsody.engine.scratch import ScratchFolder
from rhapsody.errors import BackendError

#: where a LocalCluster the backend starts listens (scheduler, nannies, workers, dashboard)
LOOPBACK = "127.0.0.1"
#: seconds closing the backend's own client / cluster may take before shutdown goes on without them
CLOSE_CLIENT_TIMEOUT = 15.0
CLOSE_CLUSTER_TIMEOUT = 30.0


class DaskConfigurationError(BackendError, ValueError):
    """The backend was given a combination of arguments it cannot use."""


@attrs.define
class ClusterSettings:
    """What ``DaskExecutionBackend`` was given, checked when it starts."""

    resources: Any = None
    cluster: Any = None
    client: Any = None
    connect_timeout: float = 10.0
    start_timeout: float = 120.0


@attrs.define(eq=False)
class Connection:
    """The client tasks go through, the cluster behind it, and which of the
    two the backend opened itself (and so closes)."""

    client: Any  # distributed.Client (untyped)
    cluster: Any = None
    owns_client: bool = True
    owns_cluster: bool = False
    scratch: ScratchFolder | None = None  # the owned cluster's scratch folder, removed after it closed

    async def close(self, log: Any) -> None:
        if self.owns_client:
            await _close_within(self.client.close(timeout=10), CLOSE_CLIENT_TIMEOUT, "client", log)
        if self.owns_cluster and self.cluster is not None:
            await _close_within(self.cluster.close(), CLOSE_CLUSTER_TIMEOUT, "cluster", log)
        if self.scratch is not None:
            self.scratch.remove()


async def connect(settings: ClusterSettings, log: Any) -> Connection:
    """The `Connection` ``settings`` describe; raises `DaskConfigurationError`
    for a combination that cannot work, `BackendError` for an engine that does
    not answer in time."""
    resources, cluster, client = settings.resources, settings.cluster, settings.client
    if cluster is not None and client is not None:
        raise DaskConfigurationError("give DaskExecutionBackend either cluster= or client=, not both")
    if resources is not None and (cluster is not None or client is not None):
        raise DaskConfigurationError(
            "resources= configures the LocalCluster the backend starts itself; it cannot be combined with cluster= or client= "
            "(configure the workers of that cluster instead)"
        )
    if resources is not None and not isinstance(resources, dict):
        raise DaskConfigurationError(f"resources= must be a dict of LocalCluster keywords, got {type(resources).__name__}")
    if isinstance(client, str):
        cluster, client = client, None
    if client is not None:
        return await _use_client(client, settings.connect_timeout)
    if cluster is not None:
        return await _use_cluster(cluster, settings.connect_timeout)
    return await _start_local_cluster(dict(resources or {}), settings, log)


def local_cluster_keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keywords the backend starts its LocalCluster with: the user's, on
    the loopback interface unless they name another host, and a scheduler that
    fails a task at once when the worker running it dies (see `engine`)."""
    unknown = sorted(set(kwargs) - _allowed_cluster_keywords())
    if unknown:
        raise DaskConfigurationError(
            f"unknown LocalCluster keyword(s) in resources=: {', '.join(unknown)} "
            "(allowed: LocalCluster, Nanny and Worker keywords such as n_workers, threads_per_worker, processes, memory_limit, resources)"
        )
    kwargs = dict(kwargs)
    host = kwargs.get("host") or kwargs.get("ip")
    if host is None and not kwargs.get("interface"):
        kwargs["host"] = host = LOOPBACK
    # Dask's default ":8787" (and ":0") binds every interface, whatever host says
    bind = str(host or LOOPBACK).split("://")[-1]
    kwargs.setdefault("dashboard_address", f"{bind}:0")
    kwargs["scheduler_kwargs"] = {"allowed_failures": 0, **(kwargs.get("scheduler_kwargs") or {})}
    return kwargs


async def _start_local_cluster(kwargs: dict[str, Any], settings: ClusterSettings, log: Any) -> Connection:
    kwargs = local_cluster_keywords(kwargs)
    scratch = None
    if "local_directory" not in kwargs:  # Dask's default, <tmp>/dask-scratch-space, outlives the cluster
        # removed at stop, or by its guard if this program is killed first
        scratch = ScratchFolder("rhapsody-dask-")
        kwargs["local_directory"] = scratch.path
        kwargs["scheduler_kwargs"].setdefault("local_directory", scratch.path)
    try:
        cluster = await asyncio.wait_for(LocalCluster(asynchronous=True, **kwargs), settings.start_timeout)  # type: ignore[no-untyped-call]
    except BaseException as exc:
        if scratch is not None:
            scratch.remove()
        if isinstance(exc, asyncio.TimeoutError):
            raise BackendError(f"the Dask LocalCluster did not start within {settings.start_timeout:g} s") from None
        if isinstance(exc, (TypeError, ValueError)):
            raise DaskConfigurationError(f"LocalCluster rejected resources={kwargs!r}: {exc}") from exc
        raise
    connection = Connection(None, cluster, owns_client=False, owns_cluster=True, scratch=scratch)
    try:
        connection.client = await _connect(cluster, None, settings.connect_timeout)
    except BaseException:
        await connection.close(log)
        raise
    connection.owns_client = True
    log.info("dask.local_cluster", scheduler=cluster.scheduler_address, dashboard=cluster.dashboard_link)
    return connection


async def _use_cluster(cluster: Any, timeout: float) -> Connection:
    if isinstance(cluster, str):
        return Connection(await _connect(cluster, None, timeout), cluster)
    address = getattr(cluster, "scheduler_address", None)
    if not isinstance(address, str) or not address:
        raise DaskConfigurationError(
            f"cluster= must be a Dask cluster object (with a scheduler_address) or a scheduler address string, got {type(cluster).__name__}"
        )
    return Connection(await _connect(address, getattr(cluster, "security", None), timeout), cluster)


async def _use_client(client: Any, timeout: float) -> Connection:
    if not isinstance(client, Client):
        raise DaskConfigurationError(f"client= must be a distributed.Client or a scheduler address, got {type(client).__name__}")
    if client.status in ("closing", "closed"):
        raise DaskConfigurationError("the Dask client given as client= is closed")
    loop = asyncio.get_running_loop()
    if client.asynchronous and getattr(client.loop, "asyncio_loop", None) is loop:
        if client.status != "running":
            await asyncio.wait_for(client, timeout)
        return Connection(client, owns_client=False)
    address = client.scheduler.address if client.scheduler is not None else None
    if not address:
        raise DaskConfigurationError("the Dask client given as client= is not connected to a scheduler")
    return Connection(await _connect(address, client.security, timeout))


async def _connect(address: Any, security: Any, timeout: float) -> Any:
    kwargs: dict[str, Any] = {"asynchronous": True, "set_as_default": False, "timeout": timeout}
    if security is not None:
        kwargs["security"] = security
    where = address if isinstance(address, str) else getattr(address, "scheduler_address", address)
    try:
        return await asyncio.wait_for(Client(address, **kwargs), timeout + 5)  # type: ignore[no-untyped-call]
    except (OSError, asyncio.TimeoutError) as exc:
        raise BackendError(f"cannot connect to the Dask scheduler at {where} within {timeout:g} s: {type(exc).__name__}: {exc}") from exc


def _allowed_cluster_keywords() -> frozenset[str]:
    names: set[str] = set()
    for fn in (LocalCluster.__init__, distributed.Nanny.__init__, distributed.Worker.__init__):
        names.update(p.name for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD)
    return frozenset(names - {"self", "loop", "asynchronous", "start", "scheduler_ip", "scheduler_port"})


async def _close_within(coro: Any, seconds: float, what: str, log: Any) -> None:
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(coro, seconds)
    except Exception as exc:  # noqa: BLE001 - shutdown goes on without it
        log.warning("dask.close_failed", what=what, seconds=round(time.monotonic() - t0, 1), error=f"{type(exc).__name__}: {exc}")
