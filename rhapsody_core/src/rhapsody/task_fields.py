"""A task's fields by name: the mapping side of every task.

rhapsody-py's tasks were dicts, radical.asyncflow reads tasks as dicts, and the
seed system did too, so a task also answers ``task["stdout"]``, ``dict(task)``,
``for key in task``, ``task.update(...)``. Fields the task class declares are
slots; a field it does not declare (``ComputeTask(..., name="x")``,
``task["note"] = 1``, ``task.note = 1``) goes to the instance ``__dict__``, which
this class provides by having no ``__slots__`` (made only when first used).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar


class FieldAccess:
    """Mapping-style access for the task classes (see the module docstring)."""

    #: every declared public field, in order (set per task class)
    public_fields: ClassVar[tuple[str, ...]] = ()

    def _extras(self) -> dict[str, Any]:
        return self.__dict__  # only extra fields live there: every declared field has a slot

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or key.startswith("_") or not hasattr(self, key):
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and not key.startswith("_") and hasattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return [*self.public_fields, *self._extras()]

    def values(self) -> list[Any]:
        return [self[key] for key in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(key, self[key]) for key in self.keys()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.public_fields) + len(self._extras())

    def update(self, other: Any = (), /, **more: Any) -> None:
        """dict-style: set several fields (or extra fields) at once."""
        for key, value in dict(other, **more).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]
