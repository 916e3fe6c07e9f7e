"""Replacing a process pool that broke (one of its workers died)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor


def replacement_pool(broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
    """A fresh pool configured like ``broken`` (same worker count, start
    method and initializer), which the backend then owns and shuts down."""
    fresh = ProcessPoolExecutor(
        max_workers=getattr(broken, "_max_workers", None),
        mp_context=getattr(broken, "_mp_context", None),
        initializer=getattr(broken, "_initializer", None),
        initargs=getattr(broken, "_initargs", ()),
    )
    broken.shutdown(wait=False, cancel_futures=True)
    return fresh
