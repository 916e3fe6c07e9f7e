"""The backend-agnostic resource request."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhapsody import Capacity, Resources, TaskValidationError


def test_defaults() -> None:
    r = Resources()
    assert (r.ranks, r.cores_per_rank, r.gpus_per_rank, r.memory) == (1, 1, 0, None)
    assert r.cores == 1 and r.gpus == 0


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"ranks": 0}, "resources.ranks"),
        ({"ranks": True}, "resources.ranks"),
        ({"ranks": 1.0}, "resources.ranks"),
        ({"cores_per_rank": 0}, "resources.cores_per_rank"),
        ({"cores_per_rank": "2"}, "resources.cores_per_rank"),
        ({"gpus_per_rank": -1}, "resources.gpus_per_rank"),
        ({"memory": 0}, "resources.memory"),
        ({"memory": -5}, "resources.memory"),
        ({"memory": 1.5}, "resources.memory"),
        ({"memory": True}, "resources.memory"),
    ],
)
def test_invalid(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(TaskValidationError) as info:
        Resources(**kw)
    assert info.value.field == field and field in str(info.value)


def test_frozen_and_hashable() -> None:
    r = Resources(ranks=2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        r.ranks = 3  # type: ignore[misc]
    assert {r, Resources(ranks=2)} == {r}


resources = st.builds(
    Resources,
    ranks=st.integers(1, 128),
    cores_per_rank=st.integers(1, 128),
    gpus_per_rank=st.integers(0, 8),
    memory=st.none() | st.integers(1, 2**45),
)


@given(resources)
def test_totals(r: Resources) -> None:
    assert r.cores == r.ranks * r.cores_per_rank
    assert r.gpus == r.ranks * r.gpus_per_rank


capacities = st.builds(
    Capacity,
    cores=st.none() | st.integers(0, 256),
    cores_per_rank=st.none() | st.integers(0, 128),
    ranks=st.none() | st.integers(0, 256),
    gpus=st.none() | st.integers(0, 16),
    gpus_per_rank=st.none() | st.integers(0, 8),
    memory=st.none() | st.integers(0, 2**45),
)


def _as_capacity(r: Resources) -> Capacity:
    return Capacity(
        cores=r.cores, cores_per_rank=r.cores_per_rank, ranks=r.ranks, gpus=r.gpus, gpus_per_rank=r.gpus_per_rank, memory=r.memory
    )


@given(resources)
def test_a_request_fits_itself_and_unknown_capacity(r: Resources) -> None:
    assert r.exceeds(_as_capacity(r)) is None
    assert r.exceeds(None) is None
    assert r.exceeds(Capacity()) is None, "every dimension unknown: nothing is refused"


@given(resources, capacities)
def test_exceeds_checks_every_dimension_on_its_own(req: Resources, cap: Capacity) -> None:
    def over(asked: int | None, limit: int | None) -> bool:
        return asked is not None and limit is not None and asked > limit

    too_big = (
        over(req.cores_per_rank, cap.cores_per_rank)
        or over(req.cores, cap.cores)
        or over(req.ranks, cap.ranks)
        or over(req.gpus_per_rank, cap.gpus_per_rank)
        or over(req.gpus, cap.gpus)
        or over(req.memory, cap.memory)
    )
    why = req.exceeds(cap)
    assert (why is not None) == too_big, why
    if why is not None:
        assert why.startswith("asks for")


def test_cores_per_rank_is_refused_although_the_total_fits() -> None:
    node = Capacity.node(2)
    assert (node.cores, node.cores_per_rank, node.ranks, node.gpus, node.memory) == (2, 2, 2, 0, None)
    assert Resources(cores_per_rank=64).exceeds(Capacity(cores=128, cores_per_rank=2)) == "asks for 64 cores per rank, a node has 2"
    assert Resources(cores_per_rank=64).exceeds(node) == "asks for 64 cores per rank, a node has 2"
    assert Resources(ranks=2, cores_per_rank=1).exceeds(node) is None
    assert Resources(ranks=2, cores_per_rank=2).exceeds(node) == "asks for 4 cores in all, backend has 2"


@pytest.mark.parametrize(
    ("request_", "capacity", "why"),
    [
        (Resources(ranks=3), Capacity(ranks=2), "asks for 3 ranks, backend can place 2"),
        (Resources(ranks=3), Capacity(cores=8, cores_per_rank=8), None),
        (Resources(gpus_per_rank=1), Capacity.node(4), "asks for 1 GPUs per rank, a node has 0"),
        (Resources(ranks=4, gpus_per_rank=1), Capacity(gpus=2, gpus_per_rank=1), "asks for 4 GPUs in all, backend has 2"),
        (Resources(gpus_per_rank=4), Capacity(), None),
        (Resources(memory=2048), Capacity.node(4, memory=1024), "asks for 2048 bytes of memory, backend has 1024"),
        (Resources(memory=2048), Capacity.node(4), None),
        (Resources(), Capacity.node(1, nodes=3), None),
        (Resources(ranks=4), Capacity.node(1, nodes=3), "asks for 4 cores in all, backend has 3"),
    ],
)
def test_each_dimension(request_: Resources, capacity: Capacity, why: str | None) -> None:
    assert request_.exceeds(capacity) == why


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_capacity_validation(bad: object) -> None:
    with pytest.raises(ValueError, match=r"Capacity\.cores"):
        Capacity(cores=bad)  # type: ignore[arg-type]
