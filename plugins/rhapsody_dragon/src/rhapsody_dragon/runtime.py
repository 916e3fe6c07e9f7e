"""The Dragon runtime the three engines share: importing Dragon lazily, owning a
runtime when the program was not started by the ``dragon`` launcher, and
keeping Dragon's own error texts (which can quote a process's whole
environment) out of task errors and logs."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from typing import Any

from rhapsody.errors import BackendError

INSTALL_HINT = "pip install 'dragonhpc[telemetry,batch]'"
#: longest engine error text a task error carries
MESSAGE_LIMIT = 1000
#: environment values shorter than this are left in messages ("1", "True", "C.UTF-8")
SECRET_MIN = 6


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
    Under the ``dragon`` launcher it is already there; from plain ``python``
    the first backend starts a ``LocalRuntime`` and the last one stops it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._owned: Any = None

    def acquire(self, timeout: float = 120.0) -> None:
        dragon = import_dragon()
        with self._lock:
            if self._users == 0 and self._owned is None and not dragon.in_dragon():
                from dragon.workflows.runtime import LocalRuntime  # noqa: PLC0415

                self._owned = LocalRuntime.start(timeout=timeout)
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._owned is not None:
                owned, self._owned = self._owned, None
                owned.stop()

    @property
    def owned(self) -> bool:
        """Whether this process started the runtime it uses (plain ``python``)."""
        return self._owned is not None


RUNTIME = Runtime()


class RuntimeLease:
    """One engine's hold on `RUNTIME`: acquired at most once, released at most once."""

    def __init__(self) -> None:
        self._held = False

    async def acquire(self) -> None:
        import_dragon()  # a missing package fails here, with the hint, before any thread starts
        await asyncio.to_thread(RUNTIME.acquire)
        self._held = True

    async def release(self) -> None:
        if self._held:
            self._held = False
            await asyncio.to_thread(RUNTIME.release)


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
