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

    def exceeds(self, capacity: Capacity | None) -> str | None:
        """Why this request can never fit ``capacity``, or None when it may
        fit. Every dimension is checked on its own: ``cores_per_rank=64`` does
        not fit a 2-core node even when the total would. ``None``: unknown."""
        if capacity is None:
            return None
        checks = (
            (self.cores_per_rank, capacity.cores_per_rank, "cores per rank", "a node has"),
            (self.cores, capacity.cores, "cores in all", "backend has"),
            (self.ranks, capacity.ranks, "ranks", "backend can place"),
            (self.gpus_per_rank, capacity.gpus_per_rank, "GPUs per rank", "a node has"),
            (self.gpus, capacity.gpus, "GPUs in all", "backend has"),
            (self.memory, capacity.memory, "bytes of memory", "backend has"),
        )
        for asked, limit, what, has in checks:
            if asked is not None and limit is not None and asked > limit:
                return f"asks for {asked} {what}, {has} {limit}"
        return None


def _optional_count(inst: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"Capacity.{attribute.name} must be None or an int >= 0, got {value!r}")


@attrs.frozen
class Capacity:
    """The most one task may ask of a backend, dimension by dimension; None
    where the backend cannot tell.

    ``cores``: cores in all; ``cores_per_rank``: the largest single rank (the
    cores of one node); ``ranks``: processes one task may have; likewise
    ``gpus`` / ``gpus_per_rank``; ``memory`` in bytes for the whole task.
    """

    cores: int | None = attrs.field(default=None, validator=_optional_count)
    cores_per_rank: int | None = attrs.field(default=None, validator=_optional_count)
    ranks: int | None = attrs.field(default=None, validator=_optional_count)
    gpus: int | None = attrs.field(default=None, validator=_optional_count)
    gpus_per_rank: int | None = attrs.field(default=None, validator=_optional_count)
    memory: int | None = attrs.field(default=None, validator=_optional_count)

    @classmethod
    def node(cls, cores: int, gpus: int | None = 0, memory: int | None = None, nodes: int = 1) -> Capacity:
        """``nodes`` alike nodes of ``cores`` cores and ``gpus`` GPUs each (None:
        unknown, see `rhapsody.engine.host.gpu_count`); a task may place one rank per core."""
        total = None if gpus is None else gpus * nodes
        return cls(cores=cores * nodes, cores_per_rank=cores, ranks=cores * nodes, gpus=total, gpus_per_rank=gpus, memory=memory)


@attrs.frozen
class NodeSample:
    """One look at one node (or worker) a backend runs tasks on, as an engine
    reports it through its optional ``sample_resources`` method.

    Percentages are point-in-time values (0-100); the ``*_bytes`` fields are
    what moved since the previous sample of that node. None where the engine
    cannot tell. ``gpu_id`` set: a per-GPU sample (only ``gpu_percent`` and
    ``gpu_memory_percent`` filled); unset: the whole node.
    """

    node_id: str
    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    gpu_memory_percent: float | None = None
    gpu_id: int | None = None
    disk_read_bytes: float | None = None
    disk_write_bytes: float | None = None
    net_sent_bytes: float | None = None
    net_recv_bytes: float | None = None
