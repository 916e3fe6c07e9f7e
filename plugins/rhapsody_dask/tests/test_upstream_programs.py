"""Programs written the way rhapsody-py 0.6's Dask docs and examples write them
(``programs/``) run unchanged on real LocalClusters, each in a fresh
interpreter with a deadline; the tests check what they print. Also the
constructor shapes that are an error here rather than a silent misuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rhapsody_dask.backend import DaskExecutionBackend

PROGRAMS = Path(__file__).parent / "programs"
DEADLINE = 300  # seconds per program, on a loaded 2-core machine


def run_program(name: str, cwd: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(PROGRAMS / f"{name}.py")], cwd=cwd, capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert "never retrieved" not in proc.stderr, proc.stderr
    return proc.stdout.splitlines()


def test_example_workload(tmp_path: Path) -> None:
    assert run_program("dask_workload", tmp_path) == [
        "backend dask",
        "Done: 30, Failed: 0",
        f"squares {[i * i for i in range(10)]}",
        f"cubes {[i**3 for i in range(10)]}",
        "echoes ok True",
        "printed ok True",
        "cube output ok True",
    ]


def test_upstream_constructor_shapes(tmp_path: Path) -> None:
    assert run_program("dask_constructors", tmp_path) == [
        "positional resources+name own_cluster 3",
        "create positional made 5",
        "positional cluster on_cluster 7",
        "create client with_client 9",
        "client still open running",
    ]


def test_asyncflow_workflows(tmp_path: Path) -> None:
    lines = run_program("dask_asyncflow", tmp_path)
    assert lines[:2] == ["workflows 16", "all equal True"], lines


def test_a_cluster_in_the_name_position_is_refused() -> None:
    """rhapsody-py's second positional argument is the name; an object there
    (this project's order before) is refused, not taken for a name."""
    with pytest.raises(TypeError, match="second argument is the backend name"):
        DaskExecutionBackend(None, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="looks like a scheduler address"):
        DaskExecutionBackend(None, "tcp://127.0.0.1:8786")
