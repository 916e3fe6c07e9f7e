"""`Journal`: the part of a Session that records tasks and replays DONE ones."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from rhapsody.errors import JournalError
from rhapsody.journal.identity import Identities
from rhapsody.journal.store import Writer, open_journal
from rhapsody.serialize import result_fields
from rhapsody.task import BaseTask, ComputeTask

#: seconds closing a journal may take to write what is still queued
CLOSE_TIMEOUT = 120.0


class Journal:
    """Opened by ``Session(journal=path)``. `admit` splits a batch into the
    tasks to run and those whose DONE result the journal holds; the session
    records every submission, and every end (through the backends' end
    listeners), batched per event-loop wake-up."""

    def __init__(self, path: str | os.PathLike[str], log: Any) -> None:
        self.path = Path(path)
        self.log = log
        self.run, self._done = open_journal(self.path)
        self._writer = Writer(self.path, self.run, log)
        self._identities = Identities()
        self._keys: dict[str, str] = {}  # uid -> key of every task of this run not yet ended
        self._pending: list[tuple[str, str, BaseTask]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.restored = 0
        log.info("journal.opened", journal=str(self.path), run=self.run, done_before=len(self._done))

    # ------------------------------------------------------------ submission
    def keys(self, tasks: list[BaseTask]) -> list[str]:
        """Each task's journal key; raises `JournalError` (before anything runs) for a task without one."""
        return [self._identities.key(task) for task in tasks]

    def admit(self, tasks: list[BaseTask], keys: list[str]) -> tuple[list[BaseTask], list[tuple[BaseTask, dict[str, Any]]]]:
        """``(to_run, restored)``: tasks to hand to the engine (recorded as
        submitted), and tasks that ended DONE before, with their result fields."""
        to_run: list[BaseTask] = []
        restored: list[tuple[BaseTask, dict[str, Any]]] = []
        for task, key in zip(tasks, keys, strict=True):
            fields = self._result(task, key)
            if fields is not None:
                restored.append((task, fields))
                continue
            self._keys[task.uid] = key
            self._queue(("submit", key, task))
            to_run.append(task)
        self.restored += len(restored)
        if restored:
            self.log.info("journal.restored", tasks=len(restored), journal=str(self.path))
        return to_run, restored

    def _result(self, task: BaseTask, key: str) -> dict[str, Any] | None:
        text = self._done.get(key)
        if text is None:
            return None
        data = json.loads(text)
        fields = result_fields(data)
        fields["timestamps"] = data.get("timestamps") or {}
        if isinstance(task, ComputeTask):  # its declared outputs must still be there, else it runs again
            missing = [str(p) for p in task.output_files if not Path(p).exists()]
            if missing:
                self.log.warning("journal.outputs_missing", task=task.uid, files=missing)
                return None
        return fields

    # ------------------------------------------------------------ recording
    def record_end(self, task: BaseTask) -> None:
        """End listener of every backend of the session (called on the event loop)."""
        key = self._keys.pop(task.uid, None)
        if key is not None:
            self._queue(("end", key, task))

    def _queue(self, item: tuple[str, str, BaseTask]) -> None:
        if not self._pending:  # the first record of this wake-up: flush after it
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._flush)
        self._pending.append(item)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._writer.put(batch)

    async def close(self) -> None:
        """Write everything queued; raises `JournalError` if a write failed."""
        self._flush()
        await asyncio.to_thread(self._writer.close, CLOSE_TIMEOUT)
        if self._writer.error is not None:
            raise JournalError(f"journal {self.path}: a write failed: {self._writer.error}") from self._writer.error
        self.log.info("journal.closed", journal=str(self.path), run=self.run, restored=self.restored)
