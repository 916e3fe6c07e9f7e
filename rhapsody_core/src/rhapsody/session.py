"""The Session: one place to submit, wait for and cancel tasks on many backends."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from rhapsody.errors import BackendNotFoundError, SessionError, TaskValidationError, WaitTimeoutError
from rhapsody.execution.backend import Backend
from rhapsody.journal import Journal
from rhapsody.log import enable_logging_from_env, get_logger
from rhapsody.registry.known import DEFAULT_BACKEND, KNOWN_BACKENDS
from rhapsody.registry.manager import get_registry
from rhapsody.retry import RetryPolicy
from rhapsody.task import BaseTask

WORK_DIR_ENV = "RHAPSODY_WORK_DIR"
PROGRESS_ENV = "RHAPSODY_PROGRESS"


class Session:
    """Routes tasks to backends by ``task.backend`` (default: the first backend).

    ``backends``: backend objects (awaited or not) or backend names; None: the
    backends `add_backend` adds, else, at the first submission or `start`, the
    default local backend (``concurrent``). Task artifacts go to ``<work_dir>/<uid>/``, where
    ``work_dir`` defaults to ``$RHAPSODY_WORK_DIR``, else the current directory.

    ``retries``: the default for tasks that set no ``retries`` of their own (an
    int, or a `rhapsody.retry.RetryPolicy` for backoff and ``retry_on`` too);
    set on every backend of the session. ``journal``: path of a SQLite file
    recording every task and result; rerunning the program with the same
    journal skips the tasks that already ended DONE (docs/durability.md).
    ``progress=True`` (or ``$RHAPSODY_PROGRESS=1``) shows live task counts, rate
    and ETA per backend; it comes with ``pip install rhapsody-telemetry``.
    """

    def __init__(
        self,
        backends: Sequence[Backend | str] | Backend | None = None,
        uid: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        retries: int | RetryPolicy | None = None,
        journal: str | os.PathLike[str] | None = None,
        progress: bool | None = None,
    ) -> None:
        enable_logging_from_env()
        if retries is not None and not isinstance(retries, RetryPolicy):
            retries = RetryPolicy(retries=retries)
        self.retry_policy: RetryPolicy | None = retries
        self.uid = uid or f"session.{uuid.uuid4().hex[:8]}"
        base = work_dir if work_dir is not None else os.environ.get(WORK_DIR_ENV) or os.getcwd()
        self.work_dir = Path(base).absolute() / self.uid
        self.log = get_logger("rhapsody.session", session=self.uid)
        self._backends: dict[str, Backend] = {}
        # futures of tasks submitted as dicts, by uid: wait_tasks finds them by uid
        self._dict_futures: dict[str, asyncio.Future[BaseTask]] = {}
        self._closed = False
        self._telemetry: Any = None  # a rhapsody-telemetry TelemetryManager once started
        self._progress: Any = None
        self.journal: Journal | None = Journal(journal, self.log) if journal is not None else None
        # rhapsody-py's ``Session()`` then ``add_backend(b)`` must route to ``b``:
        # the default backend comes only when the first task finds no backend at all
        self._wants_default = backends is None
        try:
            if backends is None:
                backends = []
            elif isinstance(backends, (Backend, str)):
                backends = [backends]
            for backend in backends:
                self.add_backend(backend)
        except BaseException:
            if self.journal is not None:  # no session to close it later: stop its writer now
                self.journal.abandon()
            raise
        self._progress = _start_progress(self, progress)

    @staticmethod
    def _default_backend() -> Backend:
        from rhapsody.backends import get_backend  # noqa: PLC0415

        if DEFAULT_BACKEND not in get_registry().records:
            raise BackendNotFoundError(
                f"Session() without backends uses the {DEFAULT_BACKEND!r} backend, which is not installed: "
                f"pip install {KNOWN_BACKENDS[DEFAULT_BACKEND]} (or pass backends=[...])"
            )
        return get_backend(DEFAULT_BACKEND)

    def add_backend(self, backend: Backend | str) -> Backend:
        if isinstance(backend, str):
            from rhapsody.backends import get_backend  # noqa: PLC0415

            backend = get_backend(backend)
        if not isinstance(backend, Backend):
            raise TypeError(f"Session backends must be RHAPSODY backends or backend names, got {type(backend).__name__}")
        if backend.name in self._backends:
            raise ValueError(f"session {self.uid} already has a backend named {backend.name!r}; give each backend its own name=")
        backend.work_dir = self.work_dir
        if self.retry_policy is not None:
            backend.retry_policy = self.retry_policy
        if self.journal is not None:
            backend.add_end_listener(self.journal.record_end)
        backend.is_attached = True
        backend.attached_to.append(self.uid)
        self._backends[backend.name] = backend
        for watcher in (self._telemetry, self._progress):
            if watcher is not None:
                watcher.observe_backend(backend)
        return backend

    @property
    def backends(self) -> dict[str, Backend]:
        return dict(self._backends)

    def _add_default_if_none(self) -> None:
        if not self._backends and self._wants_default:
            self.add_backend(self._default_backend())

    async def start(self) -> Session:
        """Start every backend (also done on first submit)."""
        self._add_default_if_none()
        await asyncio.gather(*(b.start() for b in self._backends.values()))
        return self

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ tasks
    async def submit_tasks(self, tasks: Iterable[BaseTask | dict[str, Any]] | BaseTask) -> list[asyncio.Future[BaseTask]]:
        """Submit tasks; returns one future per task, settled when it ends: a
        FAILED task's future raises its exception (``asyncio.gather`` fails fast),
        DONE and CANCELED ones resolve with the task. ``await task`` raises if it
        did not end DONE.
        An unknown backend name fails the whole call before anything is submitted."""
        if self._closed:
            raise SessionError(f"session {self.uid} is closed")
        if isinstance(tasks, (BaseTask, dict)):
            tasks = [tasks]
        tasks = list(tasks)
        if not self._backends:
            self._add_default_if_none()
            if not self._backends:
                raise BackendNotFoundError(f"session {self.uid} has no backends")
        if len(self._backends) == 1 and self.journal is None:
            # the common case, kept short: task objects, one backend, no journal
            ((default, backend),) = self._backends.items()
            for task in tasks:
                if not isinstance(task, BaseTask) or (task.backend is not None and task.backend != default):
                    break
            else:
                if not backend.accepting:
                    await backend.start()
                submitted = await backend.hand_over(backend.prepare(tasks))
                for done in submitted:
                    if done.backend is None:
                        done.backend = default
                return [t.future for t in submitted]  # type: ignore[misc]
        default = next(iter(self._backends))
        groups: dict[str, list[BaseTask | dict[str, Any]]] = {}
        for task in tasks:
            target = task.get("backend") if isinstance(task, dict) else getattr(task, "backend", None)
            target = target or default
            if target not in self._backends:
                uid = task.get("uid") if isinstance(task, dict) else getattr(task, "uid", None)
                raise BackendNotFoundError(
                    f"task {uid} asks for backend {target!r}, which is not in session {self.uid}; "
                    f"its backends are: {', '.join(self._backends)}"
                )
            groups.setdefault(target, []).append(task)
        # Every group is validated (and passes the submit hook) before any backend
        # gets a task: bad input anywhere submits nothing anywhere.
        if len(groups) == 1:  # the common case, without gather's per-call task objects
            ((name, group),) = groups.items()
            backend = self._backends[name]
            await backend.start()
            batch = backend.prepare(group)
            if self.journal is None:
                submitted = await backend.hand_over(batch)
            else:
                keys = self.journal.keys(batch)  # raises before anything runs
                await self._hand_over_journaled(backend, batch, keys)
                submitted = batch
            self._note_routing(name, group, submitted)
            return [t.future for t in submitted]  # type: ignore[misc]
        await asyncio.gather(*(self._backends[name].start() for name in groups))
        batches = {name: self._backends[name].prepare(group) for name, group in groups.items()}
        if self.journal is None:
            results = await asyncio.gather(*(self._backends[name].hand_over(batch) for name, batch in batches.items()))
        else:
            every = self.journal.keys([t for batch in batches.values() for t in batch])  # all or none counted
            keyed, start = {}, 0
            for name, batch in batches.items():
                keyed[name], start = every[start : start + len(batch)], start + len(batch)
            await asyncio.gather(*(self._hand_over_journaled(self._backends[n], b, keyed[n]) for n, b in batches.items()))
            results = list(batches.values())
        by_id: dict[int, BaseTask] = {}
        for (name, group), submitted in zip(groups.items(), results, strict=True):
            self._note_routing(name, group, submitted)
            for original, task in zip(group, submitted, strict=True):
                by_id[id(original)] = task
        futures = []
        for original in tasks:
            future = by_id[id(original)].future
            assert future is not None
            futures.append(future)
        return futures

    async def _hand_over_journaled(self, backend: Backend, batch: list[BaseTask], keys: list[tuple[str, str]]) -> None:
        """Tasks the journal holds a DONE result of end with it; the others go to the engine."""
        assert self.journal is not None
        to_run, restored = self.journal.admit(batch, keys)
        if restored:
            backend.replay(restored)
        if to_run:
            await backend.hand_over(to_run)

    def _note_routing(self, name: str, originals: list[Any], submitted: list[BaseTask]) -> None:
        """Record where each task went (``task.backend``, as rhapsody-py does), and
        the future of each task submitted as a dict, for `wait_tasks` to find by uid."""
        for original, task in zip(originals, submitted, strict=True):
            if task.backend is None:
                task.backend = name
            if isinstance(original, dict):
                if not original.get("backend"):
                    original["backend"] = name
                self._dict_futures[task.uid] = task.future  # type: ignore[assignment]

    def _future_of(self, task: Any) -> asyncio.Future[BaseTask]:
        if isinstance(task, BaseTask) and task.future is not None:
            return task.future
        uid = task.get("uid") if isinstance(task, dict) else getattr(task, "uid", None)
        if not isinstance(task, BaseTask) and isinstance(uid, str):
            future = self._dict_futures.get(uid)
            if future is not None:
                return future
            for backend in self._backends.values():
                found = backend.get_task(uid)
                if found is not None and found.future is not None:
                    return found.future
        raise TaskValidationError(
            str(uid) if uid is not None else None,
            "<task>",
            f"wait_tasks takes tasks submitted to session {self.uid} (task objects, their dicts, or objects with their uid), "
            f"got {type(task).__name__}",
        )

    async def wait_tasks(self, tasks: Iterable[Any], timeout: float | None = None) -> list[Any]:
        """Wait until every task ended; never raises for a task's failure.
        ``tasks``: task objects, the dicts submitted, or anything with a submitted
        task's ``uid``; returns them as given. Raises `WaitTimeoutError` (a
        `TimeoutError` and ``asyncio.TimeoutError``) if ``timeout`` seconds pass
        first; the tasks keep running."""
        tasks = list(tasks)
        futures = []
        for task in tasks:
            if isinstance(task, BaseTask) and task._future is not None:
                if not task.state.is_terminal:  # (an ended one has nothing to wait for, and needs no future made again)
                    futures.append(cast("asyncio.Future[BaseTask]", task._future))
            else:
                futures.append(self._future_of(task))
        waiting = await _wait_in_turn(futures, timeout)
        if waiting:
            raise WaitTimeoutError(f"{waiting} of {len(tasks)} tasks had not ended after {timeout} s")
        return tasks

    async def cancel_tasks(self, tasks: Iterable[BaseTask]) -> list[bool]:
        """Cancel tasks; True for each task that was stopped."""
        tasks = list(tasks)
        coros = []
        for task in tasks:
            backend = self._backends.get(task.backend or "") if task.backend else None
            backend = backend or self._owner(task)
            coros.append(backend.cancel_task(task.uid) if backend else asyncio.sleep(0, result=False))
        return list(await asyncio.gather(*coros))

    def _owner(self, task: BaseTask) -> Backend | None:
        for backend in self._backends.values():
            if backend.get_task(task.uid) is task:
                return backend
        return None

    async def close(self) -> None:
        """Shut down every backend, cancelling what still runs, then stop
        telemetry and progress (they record those cancellations). Idempotent."""
        if self._closed:
            return
        self._closed = True
        results = await asyncio.gather(*(b.shutdown() for b in self._backends.values()), return_exceptions=True)
        for backend, result in zip(self._backends.values(), results, strict=True):
            if isinstance(result, BaseException):
                self.log.error("backend.shutdown_failed", backend=backend.name, error=f"{type(result).__name__}: {result}")
        if self.journal is not None:  # after the backends: the cancellations of shutdown are recorded too
            for backend in self._backends.values():
                backend.remove_end_listener(self.journal.record_end)
            await self.journal.close()
        if self._progress is not None:
            self._progress.close()
        if self._telemetry is not None:
            await self._telemetry.stop()

    # -------------------------------------------------------------- telemetry
    async def start_telemetry(
        self,
        resource_poll_interval: float = 5.0,
        checkpoint_interval: float | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        span_processors: Sequence[Any] | None = None,
        metric_readers: Sequence[Any] | None = None,
        resource: Any = None,
    ) -> Any:
        """Start OpenTelemetry traces and metrics of this session's tasks and
        return the `rhapsody.telemetry.TelemetryManager` (rhapsody-py's API).

        Needs ``pip install rhapsody-telemetry``. Resources of every backend
        whose engine can sample them are polled every
        ``resource_poll_interval`` seconds; ``checkpoint_path``: a directory
        for the JSONL checkpoint, written every ``checkpoint_interval`` seconds
        (and at the end); ``span_processors`` / ``metric_readers``: your OTel
        exporters; ``resource``: an OTel ``Resource``. Stops on `close`."""
        if self._closed:
            raise SessionError(f"session {self.uid} is closed")
        if self._telemetry is not None:
            raise SessionError(f"telemetry of session {self.uid} is already started; use get_telemetry()")
        from rhapsody.telemetry._plugin import plugin  # noqa: PLC0415 - the plugin only when asked for

        manager = plugin().TelemetryManager(
            session_id=self.uid,
            checkpoint_interval=checkpoint_interval,
            checkpoint_path=None if checkpoint_path is None else os.fspath(checkpoint_path),
            span_processors=span_processors,
            metric_readers=metric_readers,
            resource=resource,
        )
        manager.observe_session(self, resource_poll_interval)
        await manager.start()
        self._telemetry = manager
        return manager

    def get_telemetry(self) -> Any:
        """The `TelemetryManager` `start_telemetry` returned; RuntimeError before."""
        if self._telemetry is None:
            raise RuntimeError(f"telemetry of session {self.uid} is not started: call `await session.start_telemetry()` first")
        return self._telemetry


def _start_progress(session: Session, wanted: bool | None) -> Any:
    """The live progress display, when asked for by argument or environment."""
    from_env = wanted is None
    if from_env:
        wanted = os.environ.get(PROGRESS_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if not wanted:
        return None
    from rhapsody.telemetry._plugin import plugin  # noqa: PLC0415

    try:
        api = plugin()
    except ModuleNotFoundError as exc:
        if not from_env:
            raise
        session.log.warning("progress.unavailable", env=PROGRESS_ENV, error=str(exc))
        return None
    return api.start_progress(session)


async def _wait_in_turn(futures: list[asyncio.Future[Any]], timeout: float | None) -> int:
    """Wait for every future, one at a time in the order given; returns how many
    had not ended when ``timeout`` passed. Tasks end in batches, so most futures
    are done by the time their turn comes: no callback is added to them, where
    ``asyncio.wait`` adds one to every future (a scheduled call per task)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    for i, future in enumerate(futures):
        if future.done():
            continue
        left = None if deadline is None else max(0.0, deadline - loop.time())
        await asyncio.wait((future,), timeout=left)
        if not future.done():
            return sum(1 for f in futures[i:] if not f.done())
    return 0
