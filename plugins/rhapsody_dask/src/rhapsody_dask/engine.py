"""`DaskEngine`: RHAPSODY's engine contract on Dask distributed.

Dask does the scheduling. The engine submits each task (`translate`), hears
from its worker when it starts (`running`), gathers results in windows
(`results`) and turns each into the task's outcome.

A worker that dies: on the backend's own LocalCluster the scheduler fails at
once (``allowed_failures=0``) every task it had placed on that worker, started
or only queued there. The engine knows from the RUNNING events which of them
had started: only those fail (naming the lost worker), unless ``retries`` is
left; the others go back to Dask under a fresh key, as if nothing happened.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from distributed import KilledWorker

from rhapsody.engine.contract import EngineContext
from rhapsody.engine.handle import TaskHandle
from rhapsody.engine.outcome import Outcome
from rhapsody.errors import BackendError, ResourceError, TaskValidationError, WorkerLostError
from rhapsody.log import get_logger
from rhapsody.resources import Capacity, NodeSample
from rhapsody_dask import worker
from rhapsody_dask.cluster import CLOSE_CLIENT_TIMEOUT, CLOSE_CLUSTER_TIMEOUT, ClusterSettings, Connection, connect
from rhapsody_dask.results import GATHER_TIMEOUT, Collector, gather
from rhapsody_dask.running import listener
from rhapsody_dask.sampling import worker_samples
from rhapsody_dask.translate import ACCEPTED_KEYS, Submission, Translator
from rhapsody_dask.workers import WorkerView

#: resubmissions of a task whose worker died before it was seen starting, before it fails
MAX_REQUEUES = 3


class DaskEngine:
    engine_name: ClassVar[str] = "dask"
    task_kinds: ClassVar[frozenset[str]] = frozenset({"compute"})
    accepted_keys: ClassVar[frozenset[str]] = ACCEPTED_KEYS

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.name, self.log = "dask", get_logger("rhapsody.dask")  # the backend's, from start on
        # core's deadlines sit above the engine's own, whose messages say more
        self.start_timeout = settings.start_timeout + settings.connect_timeout + 30
        self.stop_timeout = CLOSE_CLIENT_TIMEOUT + CLOSE_CLUSTER_TIMEOUT + 30
        self.connection: Connection | None = None
        self.cluster: Any = None  # kept after stop: users look at a closed cluster too
        self.in_flight: dict[str, Submission] = {}  # by Dask key
        self._topic = f"rhapsody-dask-{uuid.uuid4().hex[:12]}"
        self._background: list[asyncio.Task[None]] = []
        self._cancels: list[Submission] = []
        self._cancels_sent: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, context: EngineContext) -> None:
        self.name, self.log = context.name, context.log
        self.connection = connection = await connect(self.settings, self.log)
        client, self.cluster = connection.client, connection.cluster
        self.view = WorkerView(client, self.settings.connect_timeout, self.log)
        self.translator = Translator(self._topic, self.view)
        self.collector = Collector(self._deliver, self.log)
        client.subscribe_topic(self._topic, listener(self._on_running))
        await self.view.refresh()
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self.collector.run()), loop.create_task(self.view.keep_fresh())]
        self.log.info("dask.connected", scheduler=client.scheduler.address, workers=self.view.count, topic=self._topic)

    def capacity(self) -> Capacity | None:
        return self.view.capacity if self.connection is not None else None

    async def sample_resources(self) -> list[NodeSample]:
        """One sample per worker, from the scheduler (telemetry polls this)."""
        if self.connection is None:
            return []
        info = await asyncio.wait_for(self.connection.client.scheduler.identity(n_workers=-1), self.settings.connect_timeout)
        return worker_samples(info.get("workers") or {})

    async def stop(self) -> None:
        for bg in self._background:
            bg.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.in_flight.clear()
        connection, self.connection = self.connection, None
        if connection is None:
            return
        self.collector.clear()
        try:
            connection.client.unsubscribe_topic(self._topic)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        await connection.close(self.log)

    # ------------------------------------------------------------------ submit
    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        subs: list[Submission] = []
        for handle in handles:
            try:
                subs.append(self.translator.translate(handle))
            except (TaskValidationError, ResourceError, TypeError) as exc:  # TypeError: a call that cannot be pickled
                handle.failed(exc)  # this task only; the message names it (and the argument)
        for group in _alike(subs):
            self._send_group(group)

    def _send_group(self, group: list[Submission]) -> None:
        """Tasks of one wrapper and the same options go to Dask as one
        ``Client.map``: one graph update for the scheduler instead of one a
        task, about a third of the client process's CPU a no-op task."""
        if len(group) == 1:
            self._send(group[0])
            return
        assert self.connection is not None
        columns = zip(*(self.translator.arguments(sub) for sub in group), strict=True)
        try:
            futures = self.connection.client.map(group[0].wrapper, *columns, key=[sub.key for sub in group], **group[0].options)
        except Exception:  # noqa: BLE001 - one at a time, so only the task Dask refuses fails
            for sub in group:
                self._send(sub)
            return
        for sub, future in zip(group, futures, strict=True):
            self._track(sub, future)

    def _send(self, sub: Submission) -> None:
        assert self.connection is not None and sub.handle is not None
        args = self.translator.arguments(sub)
        try:
            future = self.connection.client.submit(sub.wrapper, *args, key=sub.key, **sub.options)
        except Exception as exc:  # noqa: BLE001 - Dask refused this task (a bad option): the others still go
            self._fail(sub, f"Dask refused it: {type(exc).__name__}: {exc}", exc)
            return
        self._track(sub, future)

    def _track(self, sub: Submission, future: Any) -> None:
        assert sub.handle is not None
        sub.future = future
        sub.handle.engine_data = sub
        self.in_flight[sub.key] = sub
        self.collector.add(future)

    # ------------------------------------------------------------------ what happened
    def _on_running(self, worker_address: str, key: str) -> None:
        sub = self.in_flight.get(key)
        if sub is not None and sub.handle is not None:
            sub.worker = worker_address
            sub.handle.running(worker_address)

    async def _deliver(self, futures: list[Any]) -> None:
        subs = [s for s in (self.in_flight.pop(f.key, None) for f in futures) if s is not None]
        del futures
        finished = [s for s in subs if s.future.status == "finished"]
        unfinished = [(s, s.future.status) for s in subs if s.future.status != "finished"]
        del subs
        if finished:
            assert self.connection is not None
            results = await gather(self.connection.client, [s.future for s in finished])
            for sub, (value, problem) in zip(finished, results, strict=True):
                if problem is not None:
                    self._fail(sub, f"its result could not be fetched from Dask: {type(problem).__name__}: {problem}", problem)
                else:
                    self._settle(sub, value)
        for sub, status in unfinished:
            if status == "error":
                await self._on_error(sub)
            else:  # cancelled, not by this backend
                self._fail(sub, f"Dask reports the task as {status} (scheduler restarted, or cancelled by another client)")

    def _settle(self, sub: Submission, result: tuple[str | None, bytes | None]) -> None:
        handle = sub.handle
        assert handle is not None
        address, value = result
        if value is None:  # an executable stopped before it started, by a cancel
            self._forget(sub)
            handle.canceled()
            return
        try:
            outcome = Outcome.unpack(value)
        except Exception as exc:  # noqa: BLE001 - e.g. the value's class cannot be imported here
            self._fail(sub, f"its result cannot be unpickled here: {type(exc).__name__}: {exc}", exc)
            return
        if outcome.error is not None and sub.retries > 0 and not handle.cancel_requested:
            self.log.info("dask.retry", task=handle.uid, error=type(outcome.error).__name__, retries_left=sub.retries - 1)
            self._resubmit(sub, retry=True)
            return
        self._forget(sub)
        handle.running(address)  # it ran: a task shorter than the announcement delay ends before its RUNNING event
        handle.finish(outcome)

    async def _on_error(self, sub: Submission) -> None:
        try:
            exc = await asyncio.wait_for(sub.future.exception(), GATHER_TIMEOUT)
        except Exception as problem:  # noqa: BLE001
            exc = problem
        handle = sub.handle
        assert handle is not None
        if isinstance(exc, KilledWorker) and not handle.cancel_requested:
            lost = getattr(exc.last_worker, "address", None) or "?"
            if sub.worker is None and sub.requeues < MAX_REQUEUES:  # queued there, never started: not its fault
                sub.requeues += 1
                self.log.info("dask.worker_lost_requeue", task=handle.uid, worker=lost)
                self._resubmit(sub, retry=False)
                return
            if sub.retries > 0:
                self.log.warning("dask.worker_lost_retry", task=handle.uid, retries_left=sub.retries - 1)
                self._resubmit(sub, retry=True)
                return
            self._fail(sub, f"the Dask worker {sub.worker or lost} running it was lost (its process died)", exc, lost=True)
            return
        self._fail(sub, f"Dask could not run it: {type(exc).__name__}: {exc}", exc)

    def _resubmit(self, sub: Submission, *, retry: bool) -> None:
        sub.retries -= retry
        sub.future, sub.worker = None, None
        self._send(sub)

    def _fail(self, sub: Submission, why: str, cause: BaseException | None = None, *, lost: bool = False) -> None:
        handle = sub.handle
        assert handle is not None
        self._forget(sub)
        kind = WorkerLostError if lost else BackendError  # a lost worker is retried by core when the task has retries
        error = kind(f"task {handle.uid} on backend {self.name!r}: {why}")
        error.__cause__ = cause
        handle.failed(error, stderr=why)

    def _forget(self, sub: Submission) -> None:
        """Let go of everything of an ended task (Dask frees its key when no future is held)."""
        if sub.handle is not None:
            sub.handle.engine_data = None
        sub.handle = sub.future = sub.payload = None

    # ------------------------------------------------------------------ cancel
    async def cancel(self, handle: TaskHandle) -> bool:
        """Queued: the scheduler forgets the task. Running executable: its
        process group is stopped on its worker. Running function: Dask
        releases it; the worker thread runs the call to its end, and that late
        result is dropped. Cancels within one loop turn go to Dask together."""
        sub = handle.engine_data
        if not isinstance(sub, Submission) or self.in_flight.get(sub.key) is not sub:
            return False  # its result is being delivered: it can no longer be stopped
        del self.in_flight[sub.key]
        self._cancels.append(sub)
        if self._cancels_sent is None:
            loop = asyncio.get_running_loop()
            self._cancels_sent = loop.create_future()
            loop.call_soon(self._flush_cancels)
        await asyncio.shield(self._cancels_sent)
        return True

    def _flush_cancels(self) -> None:
        batch, self._cancels = self._cancels, []
        sent, self._cancels_sent = self._cancels_sent, None
        assert sent is not None
        done = asyncio.ensure_future(self._send_cancels(batch))
        done.add_done_callback(lambda _: None if sent.done() else sent.set_result(None))

    async def _send_cancels(self, batch: list[Submission]) -> None:
        assert self.connection is not None
        client, timeout = self.connection.client, self.settings.connect_timeout
        try:
            await asyncio.wait_for(client.cancel([s.future for s in batch], reason="cancelled by RHAPSODY"), timeout)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("dask.cancel_failed", tasks=len(batch), error=f"{type(exc).__name__}: {exc}")
        stops: dict[str | None, list[str]] = {}
        for sub in batch:
            if sub.is_executable:
                stops.setdefault(sub.worker, []).append(sub.key)
            self._forget(sub)
        if stops:
            await asyncio.gather(*(self._stop_on(where, keys) for where, keys in stops.items()))

    async def _stop_on(self, where: str | None, keys: list[str]) -> None:
        """Stop executables on their worker; on every worker while the backend
        has not heard which one runs them (that also keeps them from starting)."""
        assert self.connection is not None
        try:
            await asyncio.wait_for(
                self.connection.client.run(worker.stop, keys, workers=[where] if where else None, on_error="ignore"),
                self.settings.connect_timeout,
            )
        except Exception as exc:  # noqa: BLE001
            self.log.warning("dask.stop_failed", keys=keys, worker=where, error=f"{type(exc).__name__}: {exc}")


def _alike(subs: list[Submission]) -> list[list[Submission]]:
    """``subs`` cut into runs of the same wrapper and equal options, in order
    (a run goes to Dask as one ``Client.map``; submission order is kept)."""
    groups: list[list[Submission]] = []
    for sub in subs:
        last = groups[-1][0] if groups else None
        if last is not None and last.wrapper is sub.wrapper and last.options == sub.options:
            groups[-1].append(sub)
        else:
            groups.append([sub])
    return groups
