"""The example backend, installed as its own distribution and found only through
its ``rhapsody.backends`` entry point, passes the conformance suite."""

from __future__ import annotations

import rhapsody
from rhapsody.testing import BackendConformance


def test_found_through_its_entry_point() -> None:
    record = rhapsody.discover_backends()["asyncio_inline"]
    assert record.distribution == "rhapsody-example-backend"
    from rhapsody.backends import InlineBackend

    assert InlineBackend.__module__ == "rhapsody_example_backend.backend"


class TestInlineConformance(BackendConformance):
    concurrency = 2

    def make_backend(self):
        return rhapsody.get_backend("asyncio_inline", slots=self.concurrency)
