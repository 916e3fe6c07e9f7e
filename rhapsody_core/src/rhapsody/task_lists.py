"""List fields a task makes only when someone touches them.

Most tasks never use ``arguments``, ``input_files``, ``output_files`` or
``attempt_errors``, yet an empty list is an object the cyclic garbage collector
tracks (an empty dict or tuple is not): four per task made a 100,000-task run
spend a third of its time in collections. Such a field's slot holds the shared
marker `UNTOUCHED` until the field is first read, which puts a real list there
(so ``task.arguments.append(x)`` sticks); setting the field stores the value
as given. Reading the field is the only way to see it: the marker never leaks.
"""

from __future__ import annotations

from typing import Any


class _Untouched:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<untouched list field>"


#: what the slot of a list field nobody has read or set holds
UNTOUCHED: Any = _Untouched()


class LazyList(property):
    """Stands in for the slot descriptor of one list field: a property whose
    setter and deleter are the slot's own (C, no Python call: the attrs
    ``__init__`` sets every field) and whose getter makes the list."""

    def __init__(self, slot: Any) -> None:
        def read(task: Any) -> Any:
            value = slot.__get__(task, None)
            if value is UNTOUCHED:
                value = []
                slot.__set__(task, value)
            return value

        super().__init__(read, slot.__set__, slot.__delete__)
        self.slot = slot

    def raw(self, task: Any) -> Any:
        """What the slot holds: `UNTOUCHED` or the field's value."""
        return self.slot.__get__(task, None)

    def peek(self, task: Any) -> Any:
        """The field's value; for an untouched one a new empty list that is not
        kept (it reads the same, and leaves nothing for the collector to track)."""
        value = self.slot.__get__(task, None)
        return [] if value is UNTOUCHED else value


def install(cls: type, names: tuple[str, ...]) -> None:
    """Make the slots ``names`` of the attrs class ``cls`` lazy lists."""
    for name in names:
        setattr(cls, name, LazyList(cls.__dict__[name]))


def peek(task: Any, name: str) -> Any:
    """``getattr(task, name)``, except that an untouched list field is not
    given a list to keep (for readers that only look: serialisation, journal)."""
    field = getattr(type(task), name, None)
    if isinstance(field, LazyList):
        return field.peek(task)
    return getattr(task, name)
