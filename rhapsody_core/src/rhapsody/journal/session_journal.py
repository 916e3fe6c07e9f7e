"""`Journal`: the part of a Session that records tasks and replays DONE ones."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from rhapsody.errors import JournalError
from rhapsody.journal.identity import Identities
from rhapsody.journal.store import Writer, decode_result, open_journal
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
        self._pending: list[tuple[Any, ...]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.restored = 0
        log.info("journal.opened", journal=str(self.path), run=self.run, done_before=len(self._done))

    # ------------------------------------------------------------ submission
    def keys(self, tasks: list[BaseTask]) -> list[tuple[str, str]]:
        """Each task's journal key and description text; raises `JournalError`
        (before anything runs) for a task without a stable identity."""
        return self._identities.keys(tasks)

    def admit(self, tasks: list[BaseTask], keys: list[tuple[str, str]]) -> tuple[list[BaseTask], list[tuple[BaseTask, dict[str, Any]]]]:
        """``(to_run, restored)``: tasks to hand to the engine (recorded as
        submitted), and tasks that ended DONE before, with their result fields."""
        to_run: list[BaseTask] = []
        restored: list[tuple[BaseTask, dict[str, Any]]] = []
        done, in_flight = self._done, self._keys
        records: list[tuple[Any, ...]] = []
        for task, (key, text) in zip(tasks, keys, strict=True):
            fields = self._result(task, key) if key in done else None
            if fields is not None:
                restored.append((task, fields))
                continue
            in_flight[task.uid] = key
            records.append(("submit", key, task.uid, text))
            to_run.append(task)
        if records:
            self._queue_all(records)
        self.restored += len(restored)
        if restored:
            self.log.info("journal.restored", tasks=len(restored), journal=str(self.path))
        return to_run, restored

    def _result(self, task: BaseTask, key: str) -> dict[str, Any] | None:
        row = self._done.get(key)
        if row is None:
            return None
        data = decode_result(row)
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

    def _queue(self, record: tuple[Any, ...]) -> None:
        if not self._pending:  # the first record of this wake-up: flush after it
            self._arm()
        self._pending.append(record)

    def _queue_all(self, records: list[tuple[Any, ...]]) -> None:
        if not self._pending:
            self._arm()
        self._pending.extend(records)

    def _arm(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._writer.put(batch)

    def abandon(self) -> None:
        """Stop the writer of a journal whose session could not be built (nothing was queued)."""
        self._writer.close(CLOSE_TIMEOUT)

    async def close(self) -> None:
        """Write everything queued; raises `JournalError` if a write failed."""
        self._flush()
        await asyncio.to_thread(self._writer.close, CLOSE_TIMEOUT)
        if self._writer.error is not None:
            raise JournalError(f"journal {self.path}: a write failed: {self._writer.error}") from self._writer.error
        self.log.info("journal.closed", journal=str(self.path), run=self.run, restored=self.restored)
