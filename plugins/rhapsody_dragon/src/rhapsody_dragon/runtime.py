"""The Dragon runtime the three engines share: importing Dragon lazily, owning a
runtime when the program was not started by the ``dragon`` launcher, and
keeping Dragon's own error texts (which can quote a process's whole
environment) out of task errors and logs."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from rhapsody.engine import core_count
from rhapsody.errors import BackendError
from rhapsody.log import get_logger
from rhapsody.resources import Capacity
from rhapsody_dragon.local_runtime import START_TIMEOUT, STOP_TIMEOUT, OwnedRuntime

INSTALL_HINT = "pip install 'dragonhpc[telemetry,batch]'"
#: longest engine error text a task error carries
MESSAGE_LIMIT = 1000
#: environment values shorter than this are left in messages ("1", "True", "C.UTF-8")
SECRET_MIN = 6

_log = get_logger("rhapsody.dragon.runtime")


def import_dragon() -> Any:
    """Import Dragon or raise an ImportError that names the package to install."""
    try:
        import dragon  # noqa: PLC0415
        import dragon.native.process  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"the Dragon backends of RHAPSODY need the `dragonhpc` package ({exc}); {INSTALL_HINT}") from exc
    return dragon


class Runtime:
    """One Dragon runtime per process, shared by every Dragon backend in it.

    Under the ``dragon`` launcher it is already there. From plain ``python`` the
    first backend starts a ``LocalRuntime`` and it stays up until the
    interpreter exits (or `shutdown` is called), however many backends start
    and stop meanwhile. Why not stop it with the last backend: Dragon 0.15
    cannot attach a process to a second runtime after it detached from a first
    one (the new runtime's channels fail with ``DRAGON_OBJECT_DESTROYED``), so a
    runtime stopped early could never be replaced in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[int, Callable[[], None]] = {}  # lease id -> how to halt that engine
        self._owned: OwnedRuntime | None = None
        self._closed = False
        self._hooked = False

    def acquire(self, lease: int, halt: Callable[[], None], timeout: float = START_TIMEOUT) -> None:
        """Hold the runtime for one engine; ``halt`` stops that engine's
        threads if the runtime is stopped under it (at exit)."""
        dragon = import_dragon()
        with self._lock:
            if self._owned is None and not dragon.in_dragon():
                if self._closed:
                    raise BackendError(
                        "dragon runtime: this process already stopped the Dragon runtime it had started, "
                        "and Dragon cannot attach a process to a second one; start Dragon backends in a new process"
                    )
                self._owned = OwnedRuntime.start(timeout)
            if not self._hooked:  # under the launcher too: an open Batch would hold the exit
                _at_exit(self.shutdown)
                self._hooked = True
            self._users[lease] = halt

    def release(self, lease: int) -> None:
        with self._lock:
            self._users.pop(lease, None)

    @property
    def owned(self) -> bool:
        """Whether this process started the runtime it uses (plain ``python``)."""
        return self._owned is not None

    @property
    def users(self) -> int:
        """How many started Dragon backends use the runtime now."""
        return len(self._users)

    def shutdown(self, timeout: float = STOP_TIMEOUT) -> None:
        """Run when the main thread ends (and callable before): engines still
        open are halted (their tasks are lost, as with any program that exits
        without shutting its backends down: an uncaught exception, say), then
        the runtime this process started, if any, is stopped. Afterwards no
        Dragon backend can start in this process."""
        with self._lock:
            owned, self._owned = self._owned, None
            halts, self._users = list(self._users.values()), {}
            self._closed = self._closed or owned is not None
        for halt in halts:
            try:
                halt()
            except Exception as exc:  # noqa: BLE001 - the runtime is stopped regardless
                _log.warning("runtime.halt_failed", error=f"{type(exc).__name__}: {exc}")
        if owned is not None:
            owned.stop(timeout)


RUNTIME = Runtime()


def _at_exit(stop: Callable[[], None]) -> None:
    """Run ``stop`` when the main thread ends, before Python joins the
    non-daemon threads: Dragon's ProcessGroup client leaves one waiting on
    the runtime, so an `atexit` hook would never be reached and the program
    would hang at exit. ``threading._register_atexit`` (CPython, used by
    ``concurrent.futures`` for the same reason) runs at that point; plain
    `atexit` is the fallback."""
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(stop)
            return
    except RuntimeError:  # the interpreter is already shutting down
        pass
    atexit.register(stop)


class RuntimeLease:
    """One engine's hold on `RUNTIME`: acquired at most once, released at most
    once. ``halt`` stops the engine's own threads (see `Runtime.acquire`)."""

    def __init__(self, halt: Callable[[], None]) -> None:
        self._held = False
        self._halt = halt

    async def acquire(self) -> None:
        import_dragon()  # a missing package fails here, with the hint, before any thread starts
        await asyncio.to_thread(RUNTIME.acquire, id(self), self._halt)
        self._held = True

    async def release(self) -> None:
        if self._held:
            self._held = False
            RUNTIME.release(id(self))


def scrubbed(exc: BaseException, env: Mapping[str, str] | None = None) -> str:
    """``exc`` as text fit for a task error or a log line (see `scrub`)."""
    return scrub(f"{type(exc).__name__}: {exc}", env)


def scrub(text: str, env: Mapping[str, str] | None = None) -> str:
    """Dragon's launch errors quote the whole launch request, environment
    included (tokens too): every value of this process's environment and of
    ``env`` is blanked, and the text cut to `MESSAGE_LIMIT` characters."""
    values = {v for v in os.environ.values() if len(v) >= SECRET_MIN}
    values.update(v for v in (env or {}).values() if len(v) >= SECRET_MIN)
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "<hidden>")
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + " ..."


def engine_error(what: str, exc: BaseException, env: Mapping[str, str] | None = None) -> BackendError:
    """A `BackendError` saying ``what`` went wrong in Dragon, without environment values."""
    error = BackendError(f"{what}: {scrubbed(exc, env)}")
    error.__suppress_context__ = True
    return error


class StepTimeout(BackendError):
    """A blocking Dragon call did not return within its deadline."""


async def bounded(fn: Callable[[], Any], seconds: float, engine: str, step: str, on_late: Callable[[Any], None] | None = None) -> Any:
    """``fn()`` (a blocking Dragon call) in a daemon thread of its own, waited
    for at most ``seconds``; then `StepTimeout` naming ``engine``, ``step`` and
    the time waited. The call itself cannot be interrupted: its thread is
    abandoned (a daemon: it never holds the interpreter at exit), and if it
    returns later, ``on_late`` gets what it returned, to release it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    lock = threading.Lock()
    abandoned = handed = False

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            value, ok = fn(), True
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter
            value, ok = exc, False
        nonlocal handed
        with lock:
            late, handed = abandoned, not abandoned
        if late:
            if ok and on_late is not None:
                on_late(value)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, ok, value)

    t0 = time.monotonic()
    threading.Thread(target=run, daemon=True, name=f"rhapsody-{engine}-{step.replace(' ', '-')}").start()
    try:
        return await asyncio.wait_for(asyncio.shield(future), seconds)
    except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
        with lock:
            abandoned, on_its_way = True, handed
        if on_its_way and on_late is not None:  # returned just now: release what it returns
            future.add_done_callback(lambda f: on_late(f.result()) if not f.cancelled() and f.exception() is None else None)
        if isinstance(exc, asyncio.CancelledError):
            raise
        error = StepTimeout(f"{engine}: {step} did not finish within {seconds:g} s (waited {time.monotonic() - t0:.1f} s)")
        error.__suppress_context__ = True
        raise error from None


def wait_bounded(fn: Callable[[], Any], seconds: float, name: str) -> bool:
    """``fn()`` in a daemon thread, waited for at most ``seconds`` from a
    thread that must not block for ever (exit hooks); False if it did not
    return in time (its thread is abandoned) or raised."""
    outcome: list[bool] = []

    def run() -> None:
        try:
            fn()
            outcome.append(True)
        except Exception as exc:  # noqa: BLE001 - reported as False
            _log.warning("runtime.call_failed", call=name, error=f"{type(exc).__name__}: {exc}")
            outcome.append(False)

    th = threading.Thread(target=run, daemon=True, name=f"rhapsody-{name}")
    th.start()
    th.join(seconds)
    return bool(outcome and outcome[0])


def call_bounded(fn: Callable[[], Any], seconds: float, engine: str, step: str) -> Any:
    """`bounded` for blocking callers: ``fn()``'s value within ``seconds``,
    else `StepTimeout` (its daemon thread is abandoned)."""
    box: list[tuple[bool, Any]] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box.append((False, exc))
        done.set()

    t0 = time.monotonic()
    threading.Thread(target=run, daemon=True, name=f"rhapsody-{engine}-{step.replace(' ', '-')}").start()
    if not done.wait(seconds):
        raise StepTimeout(f"{engine}: {step} did not finish within {seconds:g} s (waited {time.monotonic() - t0:.1f} s)")
    ok, value = box[0]
    if not ok:
        raise value
    return value


class NodeShape(NamedTuple):
    """What a task can get on one node. Read once when an engine starts: the
    engines check every submitted task against it, and reading the cgroup files
    behind `core_count` each time cost ~0.2 ms a submission."""

    cores: int
    gpus: int | None  # in all (None: not known before the runtime is asked)
    gpus_per_node: int | None  # the most on one node

    @classmethod
    def unstarted(cls) -> NodeShape:
        return cls(core_count(), None, None)


def node_shape() -> NodeShape:
    """This node's cores and the GPUs Dragon sees: in all, and the most on one
    node (Dragon's node descriptors; run attached to the runtime)."""
    from dragon.native.machine import Node, System  # noqa: PLC0415

    counts = [Node(h_uid).num_gpus for h_uid in System().nodes]
    return NodeShape(core_count(), sum(counts), max(counts, default=0))


class OneNodeCapacity:
    """Capacity for an engine that places each task on one node: built from the
    node's shape, which `_read_node` reads once at start (``capacity()`` is asked
    on every submission). The engine says what it makes of the shape in
    `_capacity_on`."""

    _capacity: Capacity | None = None

    def _capacity_on(self, node: NodeShape) -> Capacity:
        raise NotImplementedError

    def capacity(self) -> Capacity:
        return self._capacity or self._capacity_on(NodeShape.unstarted())

    async def _read_node(self, label: str) -> None:
        self._capacity = self._capacity_on(await bounded(node_shape, 60, label, "start step GPU count"))
