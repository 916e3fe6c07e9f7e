"""Test kit for backend authors: a conformance suite to subclass, and task
functions that every engine's workers can import.

    from rhapsody.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        concurrency = 2
        def make_backend(self):
            return MyBackend(name="mine")
"""

from rhapsody.testing.conformance import BackendConformance, LoopRunner

__all__ = ["BackendConformance", "LoopRunner"]
