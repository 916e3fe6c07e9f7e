"""The JSONL checkpoint: one JSON object per line, each with a ``section``:
``session`` (first line: who and when), ``event`` (every telemetry event),
``span`` (every finished span, once), ``metric`` (a snapshot of the counts per
backend at each flush). Lines reach the disk at every flush; a reader (or
``rhapsody report``) can read the file while the run goes on, and a crash
loses at most what came after the last flush (a cut last line is skipped).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

SUFFIX = ".telemetry.jsonl"


def checkpoint_file(directory: str | Path, session_id: str, started: float) -> Path:
    return Path(directory) / f"{session_id}.{int(started)}{SUFFIX}"


class CheckpointWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[bytes] | None = open(path, "wb", buffering=1 << 17)  # noqa: SIM115 - open for the session
        self._fallback = json.JSONEncoder(default=str, separators=(",", ":")).encode

    def write(self, section: str, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(self._line({"section": section, **record}))

    def _line(self, record: dict[str, Any]) -> bytes:
        try:
            line: bytes = orjson.dumps(record, default=str, option=_ORJSON_OPTIONS)
            return line
        except orjson.JSONEncodeError:  # what orjson refuses (an int past 64 bits, ...) the standard encoder writes
            return (self._fallback(record) + "\n").encode("utf-8")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_ORJSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def metric_snapshot(counts: dict[str, Any]) -> dict[str, Any]:
    return {"checkpoint_time": time.time(), "backends": {name: c for name, c in counts.items()}}


def read_checkpoint(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete line of a checkpoint, in order; a line cut short by a
    crash or by a writer still at work is skipped, any other bad line raises
    a ValueError naming the file and line."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    last = len(lines) - 1
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number - 1 == last:  # the unterminated tail
                return
            raise ValueError(f"{path}: line {number} is not JSON ({exc.msg}); is this a RHAPSODY telemetry checkpoint?") from None
        if not isinstance(record, dict) or "section" not in record:
            raise ValueError(f"{path}: line {number} has no 'section'; is this a RHAPSODY telemetry checkpoint?")
        yield record
