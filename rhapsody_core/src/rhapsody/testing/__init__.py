"""Test kit for backend authors: a conformance suite to subclass, and task
functions that every engine's workers can import.

    from rhapsody.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        concurrency = 2
        def make_backend(self):
            return MyBackend(name="mine")

Backends that run `AITask`s subclass ``AIBackendConformance`` instead.

``rhapsody.testing.tasks`` needs nothing but the standard library, so workers
and benchmarks can import it without pytest; the suite is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AIBackendConformance", "BackendConformance", "LoopRunner", "WorkerLossChecks"]


def __getattr__(name: str) -> Any:
    if name == "AIBackendConformance":
        from rhapsody.testing import ai_checks  # noqa: PLC0415 - imports pytest

        return ai_checks.AIBackendConformance
    if name in __all__:
        from rhapsody.testing import conformance, worker_loss  # noqa: PLC0415 - imports pytest

        return getattr(worker_loss if name == "WorkerLossChecks" else conformance, name)
    raise AttributeError(f"module 'rhapsody.testing' has no attribute {name!r}")
