"""radical.utils' file-backed id counters, with each descriptor closed once.

RP 1.103 names its session, managers, components, pilots and (when not given a
uid) tasks from counters kept in files under ``~/.radical/utils``. The helper
in ``radical.utils.ids`` that reads and bumps one (nested in its
``_generate_id``, so it cannot be replaced on its own) closes the file's
descriptor twice. Between the two closes another thread of the process may
open a file or socket and get that number, which the second close then takes
from it. libzmq's I/O threads do so all the time while they reconnect to a
closed session's bridges, and libzmq aborts the whole process when its socket
is gone ("Bad file descriptor (src/stream_connecter_base.cpp:131)"): a
benchmark process that opened and closed RP sessions one after another died so.

`install` gives that module a view of `os` in which ``close`` of a descriptor
the module already closed does nothing to the process's descriptors: it raises
EBADF, which that helper expects and ignores, as a second close raised before.
"""

from __future__ import annotations

import errno
import importlib
import os
import threading
from typing import Any


class CloseOnce:
    """`os` as radical.utils.ids sees it: ``open`` notes the descriptor (per
    thread: the open and its closes happen in one call), ``close`` closes a
    noted descriptor once and refuses any other, the rest is `os` itself."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _open_fds(self) -> set[int]:
        fds: set[int] | None = getattr(self._local, "fds", None)
        if fds is None:
            fds = self._local.fds = set()
        return fds

    def open(self, *args: Any, **kwargs: Any) -> int:
        fd = os.open(*args, **kwargs)
        self._open_fds().add(fd)
        return fd

    def close(self, fd: int) -> None:
        fds = self._open_fds()
        if fd not in fds:  # closed already: the number may be another thread's by now
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        fds.discard(fd)
        os.close(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def install() -> None:
    """Give radical.utils.ids a `CloseOnce` for its ``os`` (idempotent). A
    radical.utils whose ids module does not use ``os`` is left as it is."""
    module = importlib.import_module("radical.utils.ids")  # the engine is imported only when a backend opens
    if getattr(module, "os", None) is os:
        module.os = CloseOnce()  # type: ignore[attr-defined]
