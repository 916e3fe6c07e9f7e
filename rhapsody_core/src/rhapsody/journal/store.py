"""The journal file: one SQLite database in WAL mode, standard library only.

Table ``tasks`` holds one row per task identity (`rhapsody.journal.identity`):
its description as submitted, its state, and once it ended its results.
Table ``runs`` holds one row per program run that opened the journal.
Writes come in batches (one transaction per event-loop wake-up) from a
writer thread with its own connection, so the event loop never waits for
the disk. ``synchronous=NORMAL`` in WAL mode: a committed batch survives the
program being killed (SIGKILL, OOM, wall-time limit); a power cut may lose
the last batches, never corrupt the file.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rhapsody.errors import JournalError
from rhapsody.serialize import result_to_dict, task_to_dict
from rhapsody.task import RESULT_FIELDS, BaseTask

SCHEMA_VERSION = 1
#: seconds a connection waits for another one's lock (the CLI reading while a run writes)
BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, started REAL NOT NULL, pid INTEGER NOT NULL, argv TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted_run INTEGER NOT NULL,
    ended_run INTEGER,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
"""

_SUBMIT = """
INSERT INTO tasks (key, uid, state, description, attempts, submitted_run, updated) VALUES (?, ?, 'SUBMITTED', ?, 0, ?, ?)
ON CONFLICT (key) DO UPDATE SET uid = excluded.uid, state = 'SUBMITTED', description = excluded.description,
    result = NULL, error = NULL, submitted_run = excluded.submitted_run, ended_run = NULL, updated = excluded.updated
"""
_END = "UPDATE tasks SET state = ?, result = ?, error = ?, attempts = ?, ended_run = ?, updated = ? WHERE key = ?"


def connect(path: str | os.PathLike[str], *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the journal at ``path``; raises `JournalError` naming the file."""
    target = Path(path)
    try:
        if read_only:
            if not target.is_file():
                raise JournalError(f"journal {target}: no such file")
            conn = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False)
        else:
            conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # not a database: fails here
    except sqlite3.Error as exc:
        raise JournalError(f"journal {target}: cannot open it as a SQLite database: {exc}") from exc
    return conn


def open_journal(path: str | os.PathLike[str]) -> tuple[int, dict[str, str]]:
    """Create or open the journal, register this run; returns the run number
    and the results of the tasks that ended DONE in earlier runs, by key."""
    conn = connect(path)
    try:
        with conn:
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise JournalError(f"journal {path}: schema version {row[0]}, this RHAPSODY reads version {SCHEMA_VERSION}")
            cursor = conn.execute("INSERT INTO runs (started, pid, argv) VALUES (?, ?, ?)", (time.time(), os.getpid(), json.dumps(_argv())))
            run = cursor.lastrowid
        done = dict(conn.execute("SELECT key, result FROM tasks WHERE state = 'DONE'").fetchall())
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path}: {exc}") from exc
    finally:
        conn.close()
    assert run is not None
    return run, done


def _argv() -> list[str]:
    import sys  # noqa: PLC0415

    return list(sys.argv)


def _description(task: BaseTask) -> str:
    data = task_to_dict(task)
    for name in RESULT_FIELDS:
        data.pop(name, None)
    data.pop("response", None)
    return json.dumps(data)


def _error_text(task: BaseTask) -> str | None:
    exc = task.exception
    return None if exc is None else f"{type(exc).__name__}: {exc}"


class Writer:
    """A thread that writes batches of ``("submit" | "end", key, task)`` to the journal, in order."""

    def __init__(self, path: str | os.PathLike[str], run: int, log: Any) -> None:
        self.path, self.run, self.log = Path(path), run, log
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[Sequence[tuple[str, str, BaseTask]] | None] = queue.SimpleQueue()
        self._conn = connect(path)  # opened here: a bad path fails the Session, not the thread
        self._thread = threading.Thread(target=self._run, name="rhapsody-journal", daemon=True)
        self._thread.start()

    def put(self, batch: Sequence[tuple[str, str, BaseTask]]) -> None:
        self._queue.put(batch)

    def close(self, timeout: float) -> None:
        """Write what is queued, then stop; raises `JournalError` if that takes over ``timeout`` s."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise JournalError(f"journal {self.path}: writing the last records did not finish within {timeout:g} s")

    def _run(self) -> None:
        conn = self._conn
        try:
            while True:
                batch = self._queue.get()
                if batch is None:
                    return
                try:
                    self._write(conn, batch)
                except Exception as exc:  # noqa: BLE001 - kept and raised by the session at close
                    self.error = exc
                    self.log.error("journal.write_failed", journal=str(self.path), records=len(batch), error=f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: Sequence[tuple[str, str, BaseTask]]) -> None:
        now, run = time.time(), self.run
        submits, ends = [], []
        with conn:
            for what, key, task in batch:
                if what == "submit":
                    submits.append((key, task.uid, _description(task), run, now))
                    continue
                if submits:  # keep the order: a task's submission before its end
                    conn.executemany(_SUBMIT, submits)
                    submits = []
                ends.append((task.state.value, json.dumps(result_to_dict(task)), _error_text(task), task.attempt, run, now, key))
            if submits:
                conn.executemany(_SUBMIT, submits)
            if ends:
                conn.executemany(_END, ends)
