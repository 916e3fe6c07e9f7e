"""The backend-agnostic resource request."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhapsody import Resources, TaskValidationError


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


@given(resources)
def test_a_request_fits_itself_and_unknown_capacity(r: Resources) -> None:
    assert r.exceeds(r) is None
    assert r.exceeds(None) is None


@given(resources, resources)
def test_exceeds_agrees_with_totals(req: Resources, capacity: Resources) -> None:
    why = req.exceeds(capacity)
    too_big = (
        req.cores > capacity.cores
        or req.gpus > capacity.gpus
        or req.ranks > capacity.ranks
        or (req.memory is not None and capacity.memory is not None and req.memory > capacity.memory)
    )
    assert (why is not None) == too_big
    if why is not None:
        assert why.startswith("asks for")
        if req.cores > capacity.cores:
            assert f"{req.cores} cores" in why and str(capacity.cores) in why


@given(st.integers(2, 64))
def test_cores_message(n: int) -> None:
    why = Resources(ranks=1, cores_per_rank=n).exceeds(Resources(ranks=1, cores_per_rank=n - 1))
    assert why == f"asks for {n} cores, backend has {n - 1}"
