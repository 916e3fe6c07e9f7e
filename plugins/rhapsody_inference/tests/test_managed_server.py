"""The backend owns its server: a real llama.cpp server started from a command
given as a parameter, restarted once when it dies, stopped with the session;
no process or port left behind. Servers that never get ready fail the start
with the step, the seconds and the end of their log."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from serving import MODEL

from rhapsody import AITask, Session, TaskState
from rhapsody.errors import BackendError
from rhapsody.testing import LoopRunner
from rhapsody.testing.waiting import pid_alive, wait_for_state, wait_until_gone
from rhapsody_inference import InferenceBackend, InferenceError, ManagedServer, llama_cpp_server
from rhapsody_inference.server import port_in_use


def ai(prompt: str = "Name a colour.", **kw: Any) -> AITask:
    kw.setdefault("max_tokens", 8)
    return AITask(prompt=prompt, model=MODEL, **kw)


def test_managed_server_serves_then_leaves_nothing(run: LoopRunner, gguf: Path, tmp_path: Path) -> None:
    backend = InferenceBackend(servers=llama_cpp_server(gguf, MODEL))
    t = ai()

    async def go() -> tuple[int, int]:
        async with Session(backends=[backend], work_dir=tmp_path) as session:
            await session.start()
            (server,) = backend.servers
            assert server.process is not None and server.port is not None
            await session.submit_tasks([t])
            await session.wait_tasks([t])
            return server.process.pid, server.port

    pid, port = run(go())
    assert t.state is TaskState.DONE, t.exception
    assert isinstance(t.response, list) and len(t.response) == 1 and t.metrics["endpoints"] == [f"http://127.0.0.1:{port}/v1"]
    assert not pid_alive(pid) and not port_in_use("127.0.0.1", port)


def test_killed_server_is_restarted_once_then_tasks_fail_saying_so(run: LoopRunner, gguf: Path, tmp_path: Path) -> None:
    backend = InferenceBackend(servers=llama_cpp_server(gguf, MODEL), retries=3, backoff=0.2)

    async def go() -> tuple[AITask, AITask, list[int]]:
        async with Session(backends=[backend], work_dir=tmp_path) as session:
            await session.start()
            (server,) = backend.servers
            assert server.process is not None
            first_pid = server.process.pid
            os.kill(first_pid, signal.SIGKILL)
            after_restart = ai()
            await session.submit_tasks([after_restart])  # waits out the restart
            await session.wait_tasks([after_restart])
            assert server.process is not None and server.restarts == 1
            second_pid = server.process.pid
            os.kill(second_pid, signal.SIGKILL)
            await wait_until_gone(second_pid)
            while server.death is None:
                await asyncio.sleep(0.05)
            after_death = ai()
            await session.submit_tasks([after_death])
            await session.wait_tasks([after_death])
            return after_restart, after_death, [first_pid, second_pid]

    after_restart, after_death, pids = run(go())
    assert after_restart.state is TaskState.DONE, after_restart.exception
    assert pids[0] != pids[1]
    assert after_death.state is TaskState.FAILED
    assert isinstance(after_death.exception, InferenceError) and "already restarted 1 time" in str(after_death.exception)
    assert not any(pid_alive(p) for p in pids)


def test_request_in_flight_survives_a_restart(run: LoopRunner, gguf: Path, tmp_path: Path) -> None:
    backend = InferenceBackend(servers=llama_cpp_server(gguf, MODEL), retries=3, backoff=0.2)
    t = ai("Write a long story about a cat.", max_tokens=200)

    async def go() -> None:
        async with Session(backends=[backend], work_dir=tmp_path) as session:
            (server,) = backend.servers
            await session.submit_tasks([t])
            await wait_for_state(t, TaskState.RUNNING, timeout=120)
            await asyncio.sleep(0.5)  # the server is generating now
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)
            await session.wait_tasks([t])
            assert server.restarts == 1

    run(go())
    assert t.state is TaskState.DONE, t.exception
    assert t.metrics["requests"][0]["attempts"] >= 2


def test_server_never_ready_fails_the_start_and_is_stopped(run: LoopRunner, tmp_path: Path) -> None:
    server = ManagedServer([sys.executable, "-c", "import time; print('loading forever', flush=True); time.sleep(600)"], ready_timeout=3)
    backend = InferenceBackend(servers=server)

    async def go() -> None:
        backend.work_dir = tmp_path
        with pytest.raises(BackendError, match=r"not ready within 3 s") as info:
            await backend
        assert "loading forever" in str(info.value)  # the end of its log

    run(go())
    assert server.process is not None and not pid_alive(server.process.pid)
    assert server.port is not None and not port_in_use("127.0.0.1", server.port)


def test_server_exiting_at_once_fails_the_start_with_its_code(run: LoopRunner, tmp_path: Path) -> None:
    server = ManagedServer([sys.executable, "-c", "import sys; print('unknown flag --x', flush=True); sys.exit(3)"])
    backend = InferenceBackend(servers=server)

    async def go() -> None:
        backend.work_dir = tmp_path
        with pytest.raises(BackendError, match=r"exited with code 3 before it was ready") as info:
            await backend
        assert "unknown flag --x" in str(info.value)

    run(go())


def test_bad_command_is_refused() -> None:
    with pytest.raises(ValueError, match="command"):
        ManagedServer([])
