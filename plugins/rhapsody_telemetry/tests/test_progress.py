"""Live progress: in place on a real terminal (a pty), plain lines elsewhere,
turned on by Session(progress=True) or RHAPSODY_PROGRESS=1, absent when off."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from pathlib import Path

import pytest
from rhapsody_telemetry.progress import Progress

from rhapsody import ComputeTask, Session
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


async def _work(session: Session, n: int = 8, seconds: float = 0.05) -> None:
    tasks = [ComputeTask(function=time.sleep, args=(seconds,)) for _ in range(n)]
    await session.submit_tasks(tasks)
    await session.wait_tasks(tasks, timeout=120)


def test_progress_true_writes_log_lines_when_not_on_a_terminal(
    work_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RHAPSODY_PROGRESS_INTERVAL", "0.1")

    async def go() -> None:
        session = Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir, progress=True)
        await _work(session)
        await session.close()

    asyncio.run(go())
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rhapsody progress ")]
    assert len(lines) >= 2  # at least one periodic line and the last one
    assert lines[-1].endswith(
        "local: 8/8 ended (8 done, 0 failed, 0 canceled), 0 running, 0 queued | " + lines[-1].split("| ")[1] + "| ETA 0 s"
    )
    assert "\x1b[" not in err


def test_progress_on_a_terminal_updates_in_place(work_dir: Path) -> None:
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    chunks: list[bytes] = []

    def drain() -> None:  # a terminal's buffer is small: read as it is written, until the slave closes
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, name="pty-reader", daemon=True)
    reader.start()
    try:

        async def go() -> None:
            backends = [await ConcurrentExecutionBackend(name=name, cores=1) for name in ("a", "b")]
            session = Session(backends=backends, work_dir=work_dir)
            progress = Progress.for_session(session, stream=stream, interval=0.05)
            assert progress.tty
            tasks = [ComputeTask(function=time.sleep, args=(0.05,), backend=name) for name in ("a", "b") * 4]
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks, timeout=120)
            progress.close()
            await session.close()

        asyncio.run(go())
    finally:
        stream.close()
        reader.join(timeout=60)
        os.close(master)
    assert not reader.is_alive(), "pty reader did not see the terminal close within 60 s"
    output = b"".join(chunks).decode()
    assert "\x1b[2Fa" in output.replace("\x1b[2K", "")  # the cursor goes back up over the two backend lines
    last = output.rsplit("\x1b[2F", 1)[-1]
    assert "a: 4/4 ended (4 done" in last and "b: 4/4 ended (4 done" in last


def test_progress_from_the_environment_and_off_by_default(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    async def go() -> None:
        session = Session(backends=["concurrent"], work_dir=work_dir)
        await _work(session, n=2, seconds=0.0)
        await session.close()

    monkeypatch.delenv("RHAPSODY_PROGRESS", raising=False)
    asyncio.run(go())
    assert "rhapsody progress" not in capfd.readouterr().err
    monkeypatch.setenv("RHAPSODY_PROGRESS", "1")
    asyncio.run(go())
    assert "concurrent: 2/2 ended" in capfd.readouterr().err


def test_bad_interval_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHAPSODY_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="RHAPSODY_PROGRESS_INTERVAL must be a number of seconds, got 'soon'"):
        Progress(io.StringIO())
