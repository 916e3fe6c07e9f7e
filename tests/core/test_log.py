"""Structured logging: silent on import, one event per transition when enabled."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from toys import Recorder, run

import rhapsody
from rhapsody import ComputeTask, Session
from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.observers import STATE_LOGGER
from rhapsody.registry import get_plugin_manager
from rhapsody.testing import tasks as fn


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RHAPSODY_")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_import_configures_nothing() -> None:
    code = """
import logging, structlog
import rhapsody, rhapsody.backends, rhapsody.testing
rhapsody.discover_backends()
lg = logging.getLogger("rhapsody")
assert lg.handlers == [], lg.handlers
assert lg.level == logging.NOTSET and lg.propagate
assert logging.getLogger().handlers == []
assert not structlog.is_configured()
print("clean")
"""
    out = _python(code)
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stderr
    assert out.stderr == ""


def test_library_use_without_logging_enabled_prints_nothing(tmp_path: Path) -> None:
    code = f"""
import asyncio, logging, structlog
from rhapsody import Session, ComputeTask
async def main():
    async with Session(work_dir={str(tmp_path)!r}) as s:
        t = ComputeTask(executable="/bin/echo", arguments=["quiet"])
        await s.submit_tasks([t])
        await t
asyncio.run(main())
assert logging.getLogger("rhapsody").handlers == [] and not structlog.is_configured()
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""


def test_log_level_env_applied_at_session_creation(tmp_path: Path) -> None:
    code = f"""
import asyncio, logging
from rhapsody import Session, ComputeTask
assert logging.getLogger("rhapsody").handlers == [], "import must not read RHAPSODY_LOG_LEVEL"
async def main():
    async with Session(work_dir={str(tmp_path)!r}) as s:
        t = ComputeTask(executable="/bin/true", uid="env-task")
        await s.submit_tasks([t])
        await t
asyncio.run(main())
"""
    out = _python(code, RHAPSODY_LOG_LEVEL="DEBUG", RHAPSODY_LOG_FORMAT="json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    states = [e["state"] for e in events if e.get("event") == "task.state" and e.get("task") == "env-task"]
    assert states == ["SUBMITTED", "RUNNING", "DONE"]
    quiet = _python(code, RHAPSODY_LOG_LEVEL="WARNING")
    assert quiet.returncode == 0 and "task.state" not in quiet.stderr


def _events(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_one_json_event_per_transition(restore_logging: None, recorder: Recorder, tmp_path: Path) -> None:
    buf = io.StringIO()
    rhapsody.enable_logging(level="DEBUG", json=True, stream=buf)
    rhapsody.enable_logging(level="debug", json=True, stream=buf)  # replaces, never duplicates
    ok = ComputeTask(function=fn.add, args=(1, 2))
    bad = ComputeTask(executable="/bin/sh", arguments=["-c", "exit 5"])

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(name="logged", cores=2)], work_dir=tmp_path) as s:
            await s.submit_tasks([ok, bad])
            await s.wait_tasks([ok, bad])

    run(go())
    events = _events(buf)
    per_transition = [e for e in events if e["event"] == "task.state"]
    assert [(e["task"], e["backend"], e["state"]) for e in per_transition] == [
        (uid, backend, new.value) for uid, backend, _, new in recorder.transitions
    ]
    assert len(per_transition) == 6
    failed = next(e for e in per_transition if e["task"] == bad.uid and e["state"] == "FAILED")
    assert failed["exit_code"] == 5 and "TaskExecutionError" in failed["error"]
    assert all(e["level"] == "debug" and "timestamp" in e for e in per_transition)


def test_info_level_hides_transitions_and_console_is_human(restore_logging: None, tmp_path: Path) -> None:
    buf = io.StringIO()
    rhapsody.enable_logging(level="INFO", stream=buf)
    t = ComputeTask(function=fn.noop)

    async def go() -> None:
        async with Session(backends=[ConcurrentExecutionBackend(name="quiet", cores=1)], work_dir=tmp_path) as s:
            await s.submit_tasks([t])
            await t

    run(go())
    text = buf.getvalue()
    assert "task.state" not in text
    assert "backend.started" in text, "INFO events are shown"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_unknown_level_rejected(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="LOUD"):
        rhapsody.enable_logging(level="LOUD")


def test_state_logger_registered_only_while_debug_is_on(restore_logging: None) -> None:
    """With no observer registered a transition costs no hook call, so the
    DEBUG state logger is a plugin only while DEBUG events are wanted."""
    pm = get_plugin_manager()
    assert pm.get_plugin(STATE_LOGGER) is None
    rhapsody.enable_logging(level="DEBUG", stream=io.StringIO())
    assert pm.get_plugin(STATE_LOGGER) is not None
    rhapsody.enable_logging(level="DEBUG", stream=io.StringIO())
    assert [p for p in pm.get_plugins() if pm.get_name(p) == STATE_LOGGER] == [pm.get_plugin(STATE_LOGGER)], "registered once"
    rhapsody.enable_logging(level="INFO", stream=io.StringIO())
    assert pm.get_plugin(STATE_LOGGER) is None
