"""What a journal holds, for ``rhapsody journal run.db``: read-only, safe while a run writes."""

from __future__ import annotations

import json
import os
from typing import Any

from rhapsody.journal.store import connect


def summary(path: str | os.PathLike[str], failures: int = 20) -> dict[str, Any]:
    """Counts per state, the runs, and up to ``failures`` failed tasks (key, uid, attempts, error)."""
    conn = connect(path, read_only=True)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "tasks" not in tables:
            return {"journal": str(path), "runs": [], "states": {}, "total": 0, "failed": [], "failed_total": 0}
        states = dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state").fetchall())
        runs = [
            {"run": run, "started": started, "pid": pid, "argv": json.loads(argv)}
            for run, started, pid, argv in conn.execute("SELECT run, started, pid, argv FROM runs ORDER BY run")
        ]
        failed = [
            {"key": key, "uid": uid, "attempts": attempts, "run": run, "error": error}
            for key, uid, attempts, run, error in conn.execute(
                "SELECT key, uid, attempts, ended_run, error FROM tasks WHERE state = 'FAILED' ORDER BY updated LIMIT ?", (failures,)
            )
        ]
    finally:
        conn.close()
    return {
        "journal": str(path),
        "runs": runs,
        "states": states,
        "total": sum(states.values()),
        "failed": failed,
        "failed_total": states.get("FAILED", 0),
    }


def as_text(data: dict[str, Any]) -> str:
    lines = [f"journal {data['journal']}: {data['total']} tasks, {len(data['runs'])} runs"]
    for state, count in data["states"].items():
        lines.append(f"  {state:<10} {count}")
    if data["failed"]:
        shown = len(data["failed"])
        lines.append(f"failures ({shown} of {data['failed_total']}):" if shown < data["failed_total"] else "failures:")
        for row in data["failed"]:
            lines.append(f"  {row['uid']} (attempts {row['attempts']}, run {row['run']}): {row['error']}")
    return "\n".join(lines)
