"""`BackendRegistry`: rhapsody-py's class-level registry of backends by name,
answered from the entry-point registry, plus backends registered at run time.

A name registered at run time (``BackendRegistry.register_backend("mine",
MyBackend)``, a class or a ``"module.path.ClassName"`` string) wins over an
installed plugin's: the program said so explicitly.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from rhapsody.errors import BackendNotFoundError
from rhapsody.registry.manager import get_registry


def _import_dotted(name: str, path: str) -> type[Any]:
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImportError(f"backend {name!r}: cannot import {path!r}: {exc}") from exc


class BackendRegistry:
    """Backends by name: every installed plugin's, and those registered here."""

    _runtime: ClassVar[dict[str, type[Any] | str]] = {}

    @classmethod
    def register_backend(cls, name: str, backend_class: type[Any] | str) -> None:
        """Make ``name`` build ``backend_class`` (a class, or its import path
        ``"package.module.ClassName"``, imported on first use)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a backend name must be a non-empty string, got {name!r}")
        cls._runtime[name] = backend_class

    @classmethod
    def unregister_backend(cls, name: str) -> None:
        cls._runtime.pop(name, None)

    @classmethod
    def list_backends(cls) -> list[str]:
        return sorted({*get_registry().records, *cls._runtime})

    @classmethod
    def get_backend_class(cls, backend_name: str) -> type[Any]:
        """The class registered as ``backend_name``. Raises `BackendNotFoundError`
        (a ValueError, as in rhapsody-py) saying what is installed and what to install."""
        found = cls._runtime.get(backend_name)
        if found is None:
            return get_registry().record(backend_name).load()
        if isinstance(found, str):
            found = cls._runtime[backend_name] = _import_dotted(backend_name, found)
        return found


def backend_availability() -> dict[str, bool]:
    """rhapsody-py's ``discover_backends()`` answer: every backend name, True
    when its class imports here."""
    answer = {}
    for name in BackendRegistry.list_backends():
        try:
            BackendRegistry.get_backend_class(name)
            answer[name] = True
        except (ImportError, BackendNotFoundError, AttributeError):
            answer[name] = False
    return answer
