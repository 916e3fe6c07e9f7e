"""When the shared rhapsody-py venv of the benchmarks is reinstalled: only
when a caller pins an engine to a version the venv does not hold."""

from __future__ import annotations

from benchmarks.rhapsody_py import _lacking

HELD = ["rhapsody-py==0.6.0", "dask[distributed]==2025.1.0", "radical.pilot==1.103.0"]


def test_a_caller_without_the_engine_takes_any_version() -> None:
    assert _lacking(["rhapsody-py==0.6.0", "dask[distributed]", "radical.pilot"], HELD) == []


def test_the_same_pin_is_satisfied_and_another_pin_is_not() -> None:
    assert _lacking(["dask[distributed]==2025.1.0"], HELD) == []
    assert _lacking(["dask[distributed]==2024.12.1", "radical.pilot==1.103.0"], HELD) == ["dask[distributed]==2024.12.1"]


def test_an_engine_the_venv_lacks_is_installed() -> None:
    assert _lacking(["dragonhpc[telemetry,batch]"], HELD) == ["dragonhpc[telemetry,batch]"]
    assert _lacking(["dask"], HELD) == ["dask"]  # another requirement than the one held
