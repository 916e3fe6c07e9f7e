"""A real llama.cpp server with the real SmolLM2-135M-Instruct model, shared by
the tests of a session, started as an outside process (the backend merely
connects to it). Missing engine or model: the fixture fails, loudly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import MODEL, model_path, wait_ready

from rhapsody.testing import LoopRunner
from rhapsody_inference import llama_cpp_server
from rhapsody_inference.server import free_port, port_in_use


@pytest.fixture(scope="session")
def gguf() -> Path:
    return model_path()


@pytest.fixture(scope="session")
def llama_url(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running llama.cpp server (http://127.0.0.1:<port>/v1)."""
    port = free_port()
    argv = [part.replace("{host}", "127.0.0.1").replace("{port}", str(port)) for part in llama_cpp_server(gguf, MODEL).command]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        deadline = time.monotonic() + 30
        while port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture(scope="module")
def run() -> Iterator[LoopRunner]:
    runner = LoopRunner(300.0)
    yield runner
    runner.close()
