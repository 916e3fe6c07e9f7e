"""The journal file: one SQLite database in WAL mode, standard library only.

Table ``tasks`` holds one row per task identity (`rhapsody.journal.identity`):
its description as submitted, its state, and once it ended its results.
Table ``runs`` holds one row per program run that opened the journal.
The event loop hands over the records of each wake-up as one batch; a writer
thread with its own connection commits whatever batches arrived within
`COMMIT_INTERVAL` in one transaction, so the event loop never waits for the
disk. ``synchronous=NORMAL`` in WAL mode: a committed transaction survives the
program being killed (SIGKILL, OOM, wall-time limit); a kill loses at most
the records of the last ~50 ms, a power cut perhaps a few more, and neither
corrupts the file.
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
from rhapsody.serialize import plain, result_to_dict
from rhapsody.task import BaseTask
from rhapsody.task_lists import peek

SCHEMA_VERSION = 1
#: seconds between two commits at most: batches arriving meanwhile share one
#: transaction (a commit costs far more than a row); also what a kill can lose
COMMIT_INTERVAL = 0.05
#: seconds a connection waits for another one's lock (the CLI reading while a run writes)
BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, started REAL NOT NULL, pid INTEGER NOT NULL, argv TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,  -- the canonical text of rhapsody.journal.identity.describe
    stdout TEXT,
    stderr TEXT,
    exit_code INTEGER,
    value TEXT,                 -- the return value as JSON (cloudpickled in it when JSON cannot carry it)
    error TEXT,                 -- "Type: message" of a failure
    more TEXT,                  -- JSON of what is rarely there: exception, earlier attempts' errors, AI response
    attempts INTEGER NOT NULL DEFAULT 0,
    t_new REAL, t_submitted REAL, t_running REAL, t_ended REAL,
    submitted_run INTEGER NOT NULL,
    ended_run INTEGER,
    updated REAL NOT NULL
) WITHOUT ROWID;
"""
_ENDED = "state, stdout, stderr, exit_code, value, error, more, attempts, t_new, t_submitted, t_running, t_ended"
_SUBMIT_ROW = "(?, ?, 'SUBMITTED', ?, 0, ?, ?)"
_SUBMIT = """
INSERT INTO tasks (key, uid, state, description, attempts, submitted_run, updated) VALUES {rows}
ON CONFLICT (key) DO UPDATE SET uid = excluded.uid, state = 'SUBMITTED', description = excluded.description,
    stdout = NULL, stderr = NULL, exit_code = NULL, value = NULL, error = NULL, more = NULL,
    submitted_run = excluded.submitted_run, ended_run = NULL, updated = excluded.updated
"""
# An end, with its submission when both are written together (else description is ''
# and the submission's columns stay as they are).
_END_ROW = "(" + ", ".join("?" * 18) + ")"
_END = f"""
INSERT INTO tasks (key, uid, description, {_ENDED}, submitted_run, ended_run, updated) VALUES {{rows}}
ON CONFLICT (key) DO UPDATE SET ({_ENDED}, ended_run, updated) = ({", ".join(f"excluded.{c.strip()}" for c in _ENDED.split(","))},
    excluded.ended_run, excluded.updated),
    description = CASE WHEN excluded.description = '' THEN description ELSE excluded.description END,
    submitted_run = CASE WHEN excluded.description = '' THEN submitted_run ELSE excluded.submitted_run END
"""
#: rows per statement: each statement is one GIL release per row fewer than executemany
_CHUNK = 256
_STATES = ("NEW", "SUBMITTED", "RUNNING")


def _ended(task: BaseTask) -> tuple[Any, ...]:
    """The columns of an ended task, in `_ENDED` order: plain columns for what
    every task has, JSON only for the rare rest (it is written once per task)."""
    value = task.return_value
    stamps = task.timestamps
    state = task.state._value_
    return (
        state,
        task.stdout,
        task.stderr,
        task.exit_code,
        None if value is None else json.dumps(plain(value)),
        _error_text(task),
        _more(task),
        task.attempt,
        stamps.get("NEW"),
        stamps.get("SUBMITTED"),
        stamps.get("RUNNING"),
        stamps.get(state),
    )


def _more(task: BaseTask) -> str | None:
    if task.exception is None and not peek(task, "attempt_errors") and getattr(task, "response", None) is None:
        return None
    data = result_to_dict(task)
    return json.dumps({k: data[k] for k in ("exception", "attempt_errors", "response") if k in data})


def _many(conn: sqlite3.Connection, statement: str, row: str, rows: list[tuple[Any, ...]]) -> None:
    """``statement`` with ``_CHUNK`` rows per execution (multi-row VALUES)."""
    full = statement.format(rows=", ".join([row] * _CHUNK))
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        sql = full if len(chunk) == _CHUNK else statement.format(rows=", ".join([row] * len(chunk)))
        conn.execute(sql, [value for r in chunk for value in r])


def decode_result(row: tuple[Any, ...]) -> dict[str, Any]:
    """A DONE row's columns (`_ENDED` order) as `rhapsody.serialize.result_to_dict` output."""
    state, stdout, stderr, exit_code, value, _error, more, attempts, *stamps = row
    data: dict[str, Any] = {"state": state, "stdout": stdout, "stderr": stderr, "exit_code": exit_code, "attempt": attempts}
    data["return_value"] = None if value is None else json.loads(value)
    data["timestamps"] = {name: t for name, t in zip((*_STATES, state), stamps, strict=True) if t is not None}
    if more is not None:
        data.update(json.loads(more))
    return data


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


def open_journal(path: str | os.PathLike[str]) -> tuple[int, dict[str, tuple[Any, ...]]]:
    """Create or open the journal, register this run; returns the run number
    and the result columns (`decode_result`) of the tasks that ended DONE in earlier runs, by key."""
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
        done = {row[0]: row[1:] for row in conn.execute(f"SELECT key, {_ENDED} FROM tasks WHERE state = 'DONE'")}
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path}: {exc}") from exc
    finally:
        conn.close()
    assert run is not None
    return run, done


def _argv() -> list[str]:
    import sys  # noqa: PLC0415

    return list(sys.argv)


def _error_text(task: BaseTask) -> str | None:
    exc = task.exception
    return None if exc is None else f"{type(exc).__name__}: {exc}"


#: ``("submit", key, uid, description)`` or ``("end", key, task)``
Record = tuple[Any, ...]


class Writer:
    """A thread that writes batches of records to the journal. It takes every
    batch waiting at once, so when it falls behind, a task's submission and
    end become one row write."""

    def __init__(self, path: str | os.PathLike[str], run: int, log: Any) -> None:
        self.path, self.run, self.log = Path(path), run, log
        self.error: BaseException | None = None
        self._closing = threading.Event()
        self._queue: queue.SimpleQueue[Sequence[Record] | None] = queue.SimpleQueue()
        self._conn = connect(path)  # opened here: a bad path fails the Session, not the thread
        self._thread = threading.Thread(target=self._run, name="rhapsody-journal", daemon=True)
        self._thread.start()

    def put(self, batch: Sequence[Record]) -> None:
        self._queue.put(batch)

    def close(self, timeout: float) -> None:
        """Write what is queued, then stop; raises `JournalError` if that takes over ``timeout`` s."""
        self._closing.set()  # no more waiting for neighbours: write what is there now
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise JournalError(f"journal {self.path}: writing the last records did not finish within {timeout:g} s")

    def _run(self) -> None:
        conn = self._conn
        try:
            stop = False
            while not stop:
                batches = [self._queue.get()]
                if batches[0] is not None:  # let this wake-up's neighbours join the transaction, unless closing
                    self._closing.wait(COMMIT_INTERVAL)
                while True:  # everything else already waiting
                    try:
                        batches.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = None in batches
                records = [r for batch in batches if batch is not None for r in batch]
                try:
                    self._write(conn, records)
                except Exception as exc:  # noqa: BLE001 - kept and raised by the session at close
                    self.error = exc
                    self.log.error(
                        "journal.write_failed", journal=str(self.path), records=len(records), error=f"{type(exc).__name__}: {exc}"
                    )
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, records: list[Record]) -> None:
        now, run = time.time(), self.run
        submits: dict[str, tuple[str, str]] = {}
        ends = []
        for record in records:
            if record[0] == "submit":
                submits[record[1]] = (record[2], record[3])
                continue
            key, task = record[1], record[2]
            uid, text = submits.pop(key, None) or (task.uid, "")
            ends.append((key, uid, text, *_ended(task), run, run, now))
        with conn:
            if submits:
                _many(conn, _SUBMIT, _SUBMIT_ROW, [(key, uid, text, run, now) for key, (uid, text) in submits.items()])
            if ends:
                _many(conn, _END, _END_ROW, ends)
