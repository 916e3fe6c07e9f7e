"""One backend-agnostic resource request, translated by each backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from rhapsody.errors import TaskValidationError


def _positive_int(minimum: int) -> Callable[[Any, Any, object], None]:
    def check(inst: Resources, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise TaskValidationError(None, f"resources.{attribute.name}", f"must be an int >= {minimum}, got {value!r}")

    return check


def _memory(inst: Resources, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise TaskValidationError(None, "resources.memory", f"must be None or a positive number of bytes, got {value!r}")


@attrs.frozen
class Resources:
    """What one task needs: ``ranks`` processes of ``cores_per_rank`` cores and
    ``gpus_per_rank`` GPUs each; ``memory`` in bytes for the whole task (None: no limit)."""

    ranks: int = attrs.field(default=1, validator=_positive_int(1))
    cores_per_rank: int = attrs.field(default=1, validator=_positive_int(1))
    gpus_per_rank: int = attrs.field(default=0, validator=_positive_int(0))
    memory: int | None = attrs.field(default=None, validator=_memory)

    @property
    def cores(self) -> int:
        return self.ranks * self.cores_per_rank

    @property
    def gpus(self) -> int:
        return self.ranks * self.gpus_per_rank

    def exceeds(self, capacity: Resources | None) -> str | None:
        """Why this request can never fit ``capacity`` (a backend's largest single
        slot), or None when it may fit. ``capacity=None`` means unknown: it may fit."""
        if capacity is None:
            return None
        if self.cores > capacity.cores:
            return f"asks for {self.cores} cores, backend has {capacity.cores}"
        if self.gpus > capacity.gpus:
            return f"asks for {self.gpus} GPUs, backend has {capacity.gpus}"
        if self.ranks > capacity.ranks:
            return f"asks for {self.ranks} ranks, backend can place {capacity.ranks}"
        if self.memory is not None and capacity.memory is not None and self.memory > capacity.memory:
            return f"asks for {self.memory} bytes of memory, backend has {capacity.memory}"
        return None
