"""The ``inference`` entry point: light, imports no HTTP client."""

from __future__ import annotations

import importlib.util

from rhapsody import BackendRecord, hookimpl


def engine_problem() -> str | None:
    """None if requests can be sent from here (httpx importable), else why not."""
    return None if importlib.util.find_spec("httpx") is not None else "httpx is not installed (pip install rhapsody-inference)"


@hookimpl
def rhapsody_register_backends() -> list[BackendRecord]:
    return [
        BackendRecord(
            name="inference",
            backend_class="rhapsody_inference.backend:InferenceBackend",
            summary="AITasks on OpenAI-compatible language-model servers (vLLM, llama.cpp, ...), optionally started and watched",
            engine_check="rhapsody_inference.plugin:engine_problem",
        )
    ]
