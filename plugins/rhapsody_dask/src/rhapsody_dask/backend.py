"""RHAPSODY task model -> Dask distributed ``Client.submit``.

Dask does the scheduling; this module translates:

- a function task becomes ``client.submit(run_function, ...)`` and an executable
  ``client.submit(run_executable, ...)`` (the subprocess runs in the worker),
  under the key ``<function-or-program name>-<task uid>`` so the scheduler
  groups tasks by name (keys without a dash make every task its own group,
  which makes the scheduler quadratic);
- RUNNING comes from the worker: the task logs an event on this backend's topic
  when it starts executing (``Worker.log_event``), and the client, subscribed to
  the topic, reports it; no polling;
- results are gathered in batches as futures finish;
- RHAPSODY `Resources` become Dask worker resources (``CPU``/``GPU``) when the
  workers advertise them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shlex
import time
import traceback
import uuid
from collections.abc import Sequence
from typing import Any

import attrs
import distributed
from distributed import Client, LocalCluster

from rhapsody.backends.base import BaseExecutionBackend
from rhapsody.errors import BackendError, ResourceError
from rhapsody.resources import Resources
from rhapsody.task import BaseTask, ComputeTask
from rhapsody_dask import _worker

#: keys of ``task_backend_specific_kwargs`` handed on to ``Client.submit``
SUBMIT_KEYS = frozenset({"resources", "retries", "priority", "workers", "allow_other_workers", "key", "fifo_timeout", "pure"})
#: keys that configure an executable (used by this backend, not passed on)
EXEC_KEYS = frozenset({"cwd", "env", "shell"})
#: seconds the collector waits for more results before a gather while other tasks are in flight
GATHER_WINDOW = 0.02


class DaskConfigurationError(BackendError, ValueError):
    """The backend was given a combination of arguments it cannot use."""


@attrs.define(eq=False)
class _Entry:
    task: ComputeTask
    future: Any
    key: str
    worker: str | None = None  # where it runs, from the RUNNING event
    attempts_left: int = 0  # resubmissions allowed after a lost worker
    canceled: bool = False
    spec: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = None  # to resubmit after a lost worker
    tracker: Any = None


def _name_part(text: str) -> str:
    """A key prefix Dask groups by: letters, digits and underscores, starting
    with a letter (no dash: the scheduler splits the key at the first dash)."""
    text = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "task"
    return text if text[0].isalpha() else f"task_{text}"


def _allowed_cluster_keywords() -> frozenset[str]:
    names: set[str] = set()
    for fn in (LocalCluster.__init__, distributed.Nanny.__init__, distributed.Worker.__init__):
        names.update(p.name for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD)
    return frozenset(names - {"self", "loop", "asynchronous", "start", "scheduler_ip", "scheduler_port"})


class DaskExecutionBackend(BaseExecutionBackend):
    """Runs RHAPSODY tasks on Dask distributed.

    - neither ``cluster`` nor ``client``: start a ``LocalCluster(**resources)``
      (any LocalCluster / worker keyword; default ``dashboard_address=None``)
      and own it: shutdown closes it. A worker that dies fails its tasks at once
      (``allowed_failures=0``; pass ``retries`` per task to resubmit them).
    - ``cluster``: a Dask cluster object (sync or asynchronous, e.g. a
      ``LocalCluster``, a dask-jobqueue or Kubernetes cluster) or a scheduler
      address ``"tcp://host:8786"``. The backend connects an asynchronous
      client of its own to it and closes only that client.
    - ``client``: a ``distributed.Client``. An asynchronous client on the
      running event loop is used as-is. A synchronous client (it lives on its
      own loop thread, whose futures cannot be awaited here) is bridged: the
      backend opens one companion asynchronous client to the same scheduler,
      with the same security, and closes only that one. The user's client is
      never closed.

    ``connect_timeout`` bounds connecting to an existing scheduler and
    ``start_timeout`` starting a LocalCluster: a bad address fails ``await
    backend`` within that time.
    """

    def __init__(
        self,
        resources: dict[str, Any] | None = None,
        cluster: Any = None,
        client: Any = None,
        name: str = "dask",
        *,
        connect_timeout: float = 10.0,
        start_timeout: float = 120.0,
    ) -> None:
        super().__init__(name)
        self._resources_arg = resources
        self._cluster_arg = cluster
        self._client_arg = client
        self._connect_timeout = connect_timeout
        self._start_timeout = start_timeout
        self._client: Client | None = None
        self._cluster: Any = None
        self._owns_client = False
        self._owns_cluster = False
        self._topic = f"rhapsody-dask-{uuid.uuid4().hex[:12]}"
        self._entries: dict[str, _Entry] = {}  # uid -> in flight in Dask
        self._done: list[_Entry] = []
        self._wakeup: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._workers: dict[str, dict[str, Any]] = {}
        self._capacity: Resources | None = None
        self._advertised: set[str] = set()
        self._cancel_batch: list[_Entry] = []
        self._cancel_flush: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ accessors
    @property
    def client(self) -> Client | None:
        """The asynchronous client tasks are submitted through (after start)."""
        return self._client

    @property
    def cluster(self) -> Any:
        """The LocalCluster this backend started, or the cluster it was given."""
        return self._cluster

    # ------------------------------------------------------------------ start
    async def _start(self) -> None:
        resources, cluster, client = self._resources_arg, self._cluster_arg, self._client_arg
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
            await self._use_client(client)
        elif cluster is not None:
            await self._use_cluster(cluster)
        else:
            await self._start_local_cluster(dict(resources or {}))
        assert self._client is not None
        self._wakeup = asyncio.Event()
        self._client.subscribe_topic(self._topic, self._on_event)
        await self._refresh_workers()
        loop = asyncio.get_running_loop()
        self._collector = loop.create_task(self._collect())
        self._refresher = loop.create_task(self._refresh_loop())
        self.log.info("dask.connected", scheduler=self._client.scheduler.address, workers=len(self._workers), topic=self._topic)

    async def _start_local_cluster(self, kwargs: dict[str, Any]) -> None:
        unknown = sorted(set(kwargs) - _allowed_cluster_keywords())
        if unknown:
            raise DaskConfigurationError(
                f"unknown LocalCluster keyword(s) in resources=: {', '.join(unknown)} "
                "(allowed: LocalCluster, Nanny and Worker keywords such as n_workers, threads_per_worker, processes, memory_limit, resources)"
            )
        for bad in ("asynchronous", "loop", "start"):
            kwargs.pop(bad, None)
        kwargs.setdefault("dashboard_address", ":0")
        scheduler_kwargs = {"allowed_failures": 0, **(kwargs.pop("scheduler_kwargs", None) or {})}
        try:
            self._cluster = await asyncio.wait_for(
                LocalCluster(asynchronous=True, scheduler_kwargs=scheduler_kwargs, **kwargs), self._start_timeout
            )
        except asyncio.TimeoutError:
            raise BackendError(f"the Dask LocalCluster did not start within {self._start_timeout:g} s") from None
        except (TypeError, ValueError) as exc:
            raise DaskConfigurationError(f"LocalCluster rejected resources={kwargs!r}: {exc}") from exc
        self._owns_cluster = True
        self._client = await self._connect(self._cluster)
        self._owns_client = True

    async def _use_cluster(self, cluster: Any) -> None:
        if isinstance(cluster, str):
            address, security = cluster, None
        else:
            address = getattr(cluster, "scheduler_address", None)
            if not isinstance(address, str) or not address:
                raise DaskConfigurationError(
                    f"cluster= must be a Dask cluster object (with a scheduler_address) or a scheduler address string, "
                    f"got {type(cluster).__name__}"
                )
            security = getattr(cluster, "security", None)
        self._cluster = cluster
        self._client = await self._connect(address, security=security)
        self._owns_client = True

    async def _use_client(self, client: Any) -> None:
        if not isinstance(client, Client):
            raise DaskConfigurationError(f"client= must be a distributed.Client or a scheduler address, got {type(client).__name__}")
        if client.status in ("closing", "closed"):
            raise DaskConfigurationError("the Dask client given as client= is closed")
        loop = asyncio.get_running_loop()
        on_this_loop = client.asynchronous and getattr(client.loop, "asyncio_loop", None) is loop
        if on_this_loop:
            if client.status != "running":
                await asyncio.wait_for(client, self._connect_timeout)
            self._client = client
            self._owns_client = False
            return
        # A synchronous client (or one bound to another loop): its futures cannot
        # be awaited on this loop. Open a companion client to the same scheduler.
        address = client.scheduler.address if client.scheduler is not None else None
        if not address:
            raise DaskConfigurationError("the Dask client given as client= is not connected to a scheduler")
        self._client = await self._connect(address, security=client.security)
        self._owns_client = True

    async def _connect(self, address: Any, security: Any = None) -> Client:
        kwargs: dict[str, Any] = {"asynchronous": True, "set_as_default": False, "timeout": self._connect_timeout}
        if security is not None:
            kwargs["security"] = security
        where = address if isinstance(address, str) else getattr(address, "scheduler_address", address)
        try:
            return await asyncio.wait_for(Client(address, **kwargs), self._connect_timeout + 5)
        except (OSError, asyncio.TimeoutError) as exc:
            raise BackendError(
                f"cannot connect to the Dask scheduler at {where} within {self._connect_timeout:g} s: {type(exc).__name__}: {exc}"
            ) from exc

    # ------------------------------------------------------------------ workers, capacity
    async def _refresh_workers(self) -> None:
        assert self._client is not None
        info = await asyncio.wait_for(self._client.scheduler.identity(n_workers=-1), self._connect_timeout)
        workers = info.get("workers", {}) or {}
        self._workers = workers
        advertised: set[str] = set()
        best: Resources | None = None
        best_cores = best_gpus = best_mem = 0
        for w in workers.values():
            res = w.get("resources") or {}
            advertised.update(res)
            best_cores = max(best_cores, int(res.get("CPU", w.get("nthreads", 1))))
            best_gpus = max(best_gpus, int(res.get("GPU", 0)))
            best_mem = max(best_mem, int(w.get("memory_limit") or 0))
        if workers:
            best = Resources(ranks=1, cores_per_rank=max(best_cores, 1), gpus_per_rank=best_gpus, memory=best_mem or None)
        self._advertised = advertised
        self._capacity = best

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            try:
                await self._refresh_workers()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the last known view
                self.log.debug("dask.refresh_failed", error=f"{type(exc).__name__}: {exc}")

    def capacity(self) -> Resources | None:
        """The largest worker (``CPU`` resource or threads, ``GPU`` resource,
        memory limit) last seen; one rank (Dask places no multi-rank jobs).
        None while the cluster has no workers (e.g. an adaptive cluster that
        has not scaled up yet): nothing can be ruled out then."""
        return self._capacity

    # ------------------------------------------------------------------ submit
    def _dask_resources(self, task: ComputeTask) -> dict[str, float] | None:
        req: dict[str, float] = {}
        if "CPU" in self._advertised:
            req["CPU"] = task.resources.cores
        if "GPU" in self._advertised and task.resources.gpus:
            req["GPU"] = task.resources.gpus
        if "MEMORY" in self._advertised and task.resources.memory:
            req["MEMORY"] = task.resources.memory
        user = task.task_backend_specific_kwargs.get("resources")
        if user:
            req.update(user)
        return req or None

    def _translate(self, task: ComputeTask) -> tuple[Any, tuple[Any, ...], dict[str, Any], int]:
        extra = task.task_backend_specific_kwargs
        unknown = set(extra) - SUBMIT_KEYS - EXEC_KEYS
        if unknown:
            self.log.warning("dask.ignored_kwargs", task=task.uid, keys=sorted(unknown))
        options: dict[str, Any] = {k: extra[k] for k in SUBMIT_KEYS & set(extra) if k != "resources"}
        options.setdefault("pure", False)
        resources = self._dask_resources(task)
        if resources:
            missing = [r for r in resources if r not in self._advertised]
            if missing and self._workers:
                raise ResourceError(
                    f"task {task.uid} asks for Dask worker resource(s) {', '.join(missing)}, which no worker advertises "
                    f"(advertised: {', '.join(sorted(self._advertised)) or 'none'})"
                )
            options["resources"] = resources
        retries = int(extra.get("retries") or 0)
        if task.is_function:
            fn = task.function
            options.setdefault("key", f"{_name_part(getattr(fn, '__name__', None) or type(fn).__name__)}-{task.uid}")
            return _worker.run_function, (self._topic, task.uid, fn, task.args, task.kwargs), options, retries
        shell = task.runs_in_shell
        if shell:
            command: Any = task.shell_command
            try:
                prog = shlex.split(task.executable)[0]
            except (ValueError, IndexError):
                prog = task.executable.split()[0]
        else:
            command = [task.executable, *task.arguments]
            prog = task.executable
        spec = {"command": command, "shell": bool(shell), "cwd": extra.get("cwd"), "env": extra.get("env")}
        if task.capture_stdio:
            spec["out_path"] = os.fspath(self.artifact_path(task, "out"))
            spec["err_path"] = os.fspath(self.artifact_path(task, "err"))
        options.setdefault("key", f"{_name_part(os.path.basename(prog))}-{task.uid}")
        return _worker.run_executable, (self._topic, task.uid, spec), options, retries

    async def _submit(self, tasks: Sequence[BaseTask]) -> None:
        for task in tasks:
            assert isinstance(task, ComputeTask)
            try:
                fn, args, options, retries = self._translate(task)
                self._launch(task, fn, args, options, retries)
            except ResourceError as exc:
                self.report_failure(task, exc, stderr=str(exc))
            except Exception as exc:  # noqa: BLE001 - this task cannot go to Dask; the others still do
                self._entries.pop(task.uid, None)
                error = BackendError(f"task {task.uid}: Dask refused it: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                self.report_failure(task, error)

    def _launch(self, task: ComputeTask, fn: Any, args: tuple[Any, ...], options: dict[str, Any], retries: int) -> None:
        assert self._client is not None
        future = self._client.submit(fn, *args, **options)
        entry = _Entry(task=task, future=future, key=options["key"], attempts_left=retries, spec=(fn, args, options))
        self._entries[task.uid] = entry
        entry.tracker = asyncio.ensure_future(self._track(entry))

    async def _track(self, entry: _Entry) -> None:
        try:
            await entry.future._state.wait()
        except Exception:  # noqa: BLE001 - the status says what happened
            pass
        if self._entries.get(entry.task.uid) is entry:
            self._done.append(entry)
            assert self._wakeup is not None
            self._wakeup.set()

    # ------------------------------------------------------------------ events and results
    def _on_event(self, event: tuple[float, Any]) -> None:
        _, msg = event
        try:
            worker, uids = msg
        except (TypeError, ValueError):
            return
        if not isinstance(uids, (list, tuple)):  # msgpack turns the list into a tuple
            return
        for uid in uids:
            entry = self._entries.get(uid)
            if entry is None:
                continue
            entry.worker = worker
            self.report_running(entry.task)

    async def _collect(self) -> None:
        """Turn finished Dask futures into RHAPSODY results, a batch at a time."""
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            if len(self._entries) > len(self._done):
                # more tasks are in flight: let a few more finish so that one
                # gather (a round trip through the scheduler) fetches them together
                await asyncio.sleep(GATHER_WINDOW)
            self._wakeup.clear()
            batch, self._done = self._done, []
            try:
                await self._finish_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never let the collector die
                self.log.error("dask.collect_failed", error=f"{type(exc).__name__}: {exc}")
                for entry in batch:
                    if not entry.task.state.is_terminal:
                        self._forget(entry)
                        self.report_failure(entry.task, BackendError(f"task {entry.task.uid}: collecting its result failed: {exc}"))

    def _forget(self, entry: _Entry) -> None:
        if self._entries.get(entry.task.uid) is entry:
            del self._entries[entry.task.uid]

    async def _finish_batch(self, batch: list[_Entry]) -> None:
        assert self._client is not None
        finished = [e for e in batch if e.future.status == "finished" and not e.canceled]
        if finished:
            try:
                values = await self._client.gather([e.future for e in finished])
            except Exception:  # noqa: BLE001 - one bad apple: fall back to one by one
                values = None
            for i, entry in enumerate(finished):
                if values is None:
                    try:
                        value = await entry.future
                    except Exception as exc:  # noqa: BLE001
                        self._forget(entry)
                        self._fail_engine(entry, f"its result could not be fetched from Dask: {type(exc).__name__}: {exc}", exc)
                        continue
                else:
                    value = values[i]
                self._forget(entry)
                self._deliver(entry, value)
        for entry in batch:
            if entry.canceled or entry.future.status == "finished":
                self._forget(entry)
                continue
            if entry.future.status == "error":
                await self._on_error(entry)
            else:  # cancelled or lost, not by us
                self._forget(entry)
                self._fail_engine(entry, f"Dask reports the task as {entry.future.status} (scheduler restarted, or cancelled elsewhere)")

    def _deliver(self, entry: _Entry, value: Any) -> None:
        task = entry.task
        if not task.is_function and value.get("status") == _worker.CANCELLED:
            self.report_canceled(task)
            return
        # it ran: a task shorter than the workers' announcement delay finishes
        # before its RUNNING event arrives
        self.report_running(task)
        if task.is_function:
            self.report_result(task, return_value=value)
            return
        self.report_result(task, exit_code=value["exit_code"], stdout=value["stdout"], stderr=value["stderr"])

    async def _on_error(self, entry: _Entry) -> None:
        future, task = entry.future, entry.task
        exc = await future.exception()
        tb = await future.traceback()
        if isinstance(exc, distributed.KilledWorker):
            if entry.attempts_left > 0 and not entry.canceled:
                # Dask's retries= covers exceptions only; a lost worker is retried here.
                assert entry.spec is not None
                fn, args, options = entry.spec
                attempt = int(options.get("retries") or 0) - entry.attempts_left + 1
                options = {**options, "key": f"{entry.key.split('~', 1)[0]}~r{attempt}"}
                self.log.warning("dask.worker_lost_retry", task=task.uid, attempts_left=entry.attempts_left - 1)
                self._forget(entry)
                self._launch(task, fn, args, options, entry.attempts_left - 1)
                return
            self._forget(entry)
            worker = getattr(exc, "last_worker", None)
            where = getattr(worker, "address", None) or entry.worker or "?"
            self._fail_engine(entry, f"the Dask worker {where} running it was lost (its process died) ({exc})", exc)
            return
        self._forget(entry)
        self.report_running(task)  # it ran and raised
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        self.report_failure(task, exc, stderr=text)

    def _fail_engine(self, entry: _Entry, why: str, cause: BaseException | None = None) -> None:
        error = BackendError(f"task {entry.task.uid} on backend {self.name!r}: {why}")
        error.__cause__ = cause
        self.report_failure(entry.task, error, stderr=why)

    # ------------------------------------------------------------------ cancel
    async def _cancel(self, task: BaseTask) -> bool:
        """Queued: the scheduler forgets the task. Running executable: its
        process tree is killed on its worker. Running function: Dask releases
        it; the worker thread runs the call to its end, and that late result is
        dropped. Cancels within one loop turn go to Dask as one batch."""
        entry = self._entries.pop(task.uid, None)
        if entry is None:
            return True  # not (or no longer) in Dask: it will not run on
        entry.canceled = True
        if entry.tracker is not None:
            entry.tracker.cancel()
        self._cancel_batch.append(entry)
        if self._cancel_flush is None:
            self._cancel_flush = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._start_flush)
        flush = self._cancel_flush
        await asyncio.shield(flush)
        return True

    def _start_flush(self) -> None:
        batch, self._cancel_batch = self._cancel_batch, []
        flush, self._cancel_flush = self._cancel_flush, None
        assert flush is not None
        task = asyncio.ensure_future(self._flush_cancels(batch))
        task.add_done_callback(lambda _t: flush.done() or flush.set_result(None))

    async def _flush_cancels(self, batch: list[_Entry]) -> None:
        assert self._client is not None
        try:
            await asyncio.wait_for(self._client.cancel([e.future for e in batch], reason="cancelled by RHAPSODY"), self._connect_timeout)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("dask.cancel_failed", tasks=len(batch), error=f"{type(exc).__name__}: {exc}")
        kills: dict[str | None, list[str]] = {}
        for e in batch:
            if not e.task.is_function:
                kills.setdefault(e.worker, []).append(e.task.uid)
        if kills:
            await asyncio.gather(*(self._kill_remote(uids, worker) for worker, uids in kills.items()))

    async def _kill_remote(self, uids: list[str], worker: str | None) -> None:
        """Kill executables' process trees on their worker (on every worker while
        we do not know which one has them: that also stops them from starting)."""
        assert self._client is not None
        try:
            await asyncio.wait_for(
                self._client.run(_worker.kill, uids, workers=[worker] if worker else None, on_error="ignore"),
                self._connect_timeout,
            )
        except Exception as exc:  # noqa: BLE001
            self.log.warning("dask.kill_failed", tasks=uids, worker=worker, error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ stop
    async def _stop(self) -> None:
        for bg in (self._collector, self._refresher):
            if bg is not None:
                bg.cancel()
        self._entries.clear()
        client, cluster = self._client, self._cluster
        if client is not None:
            try:
                client.unsubscribe_topic(self._topic)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            if self._owns_client:
                await _bounded(client.close(timeout=10), 15, self, "client")
        if cluster is not None and self._owns_cluster:
            await _bounded(cluster.close(), 30, self, "cluster")
        self._client = None


async def _bounded(coro: Any, seconds: float, backend: DaskExecutionBackend, what: str) -> None:
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(coro, seconds)
    except Exception as exc:  # noqa: BLE001 - shutdown goes on
        backend.log.warning("dask.close_failed", what=what, seconds=round(time.monotonic() - t0, 1), error=f"{type(exc).__name__}: {exc}")
