"""What a backend plugin tells core about itself."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import attrs


def _import_path(inst: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or value.count(":") != 1):
        raise ValueError(f"{attribute.name} must look like 'package.module:Name', got {value!r}")


def load_object(path: str) -> Any:
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class BackendRecord:
    """One backend, as returned from ``rhapsody_register_backends``.

    ``backend_class`` and ``engine_check`` are import paths (``module:Name``) so
    discovery never imports an engine. ``engine_check`` names a callable that
    returns None when the engine can be used, else a sentence saying why not.
    ``aliases`` are extra class names ``rhapsody.backends`` exposes it under.
    """

    name: str
    backend_class: str = attrs.field(validator=_import_path)
    summary: str = ""
    engine_check: str | None = attrs.field(default=None, validator=_import_path)
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_names)
    # Filled in by the manager from the entry point, never by the plugin.
    distribution: str = attrs.field(default="", eq=False)
    version: str = attrs.field(default="", eq=False)

    @property
    def class_name(self) -> str:
        return self.backend_class.rpartition(":")[2]

    def load(self) -> type:
        return load_object(self.backend_class)  # type: ignore[no-any-return]

    def engine_problem(self) -> str | None:
        """None if the engine is usable here, else why not (imports the engine)."""
        if self.engine_check is None:
            return None
        try:
            return load_object(self.engine_check)()  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - a failing check is itself the answer
            return f"{type(exc).__name__}: {exc}"
