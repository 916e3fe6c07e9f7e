"""Programs written the way rhapsody-py 0.6's docs write RADICAL-Pilot programs
(``programs/``) run unchanged against a real local.localhost pilot, each in a
fresh interpreter with a deadline; the tests check what they print. And
rhapsody-py's ``raptor_config`` / constructor shapes: what maps, what is refused.

The programs ask for a 4-core pilot (raptor's master and worker hold two
cores for the pilot's life, executables get the rest) on this 2-core box: as
an RP user would, the test gives RP a resource config declaring 4 cores
(``$RADICAL_CONFIG_USER_DIR``), not the program an extra argument.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from procs import assert_nothing_left, group_members

from rhapsody_radical.backend import RadicalExecutionBackend

PROGRAMS = Path(__file__).parent / "programs"
DEADLINE = 600  # seconds per program: a pilot on a loaded 2-core machine


def run_program(name: str, cwd: Path) -> list[str]:
    config = cwd / "rp-config"
    target = config / ".radical" / "pilot" / "configs"
    target.mkdir(parents=True)
    local = {"localhost": {"cores_per_node": 4, "gpus_per_node": 0, "fake_resources": True}}
    (target / "resource_local.json").write_text(json.dumps(local))
    env = {**os.environ, "RADICAL_CONFIG_USER_DIR": str(config)}
    baseline = group_members()
    proc = subprocess.run(
        [sys.executable, str(PROGRAMS / f"{name}.py")], cwd=cwd, env=env, capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert "never retrieved" not in proc.stderr, proc.stderr
    assert_nothing_left(baseline, None)
    return proc.stdout.splitlines()


def test_executables_and_functions_with_raptor_config(tmp_path: Path) -> None:
    assert run_program("rp_workload", tmp_path) == [
        "backend radical_pilot",
        "states ['DONE'] bad FAILED",
        "bad raised ValueError: broken on purpose",
        f"exe out {[f'exe {i}' for i in range(4)]}",
        f"squares {[i * i for i in range(6)]}",
        f"square prints {[f'square {i}' for i in range(6)]}",
        "shout prints ['ALPHA', 'BETA', 'GAMMA']",
        "shout stderr ['about alpha', 'about beta', 'about gamma']",
        "lengths [5, 4, 5]",
    ]


def test_asyncflow_on_a_pilot(tmp_path: Path) -> None:
    assert run_program("rp_asyncflow", tmp_path) == ["results " + str([(45, "reported")] * 4)]


# ---------------------------------------------------------------- raptor_config / constructor shapes (no pilot needed)
def test_raptor_config_maps_onto_raptor_options() -> None:
    config = {"masters": [{"ranks": 1, "workers": [{"ranks": 2}, {"ranks": 1, "cores_per_rank": 2, "worker_type": "DefaultWorker"}]}]}
    backend = RadicalExecutionBackend({"runtime": 5, "cores": 2}, config, "rp")
    assert backend.name == "rp"
    assert backend.raptor_options == {"workers": 2, "cores_per_worker": 2, "eager": True}
    keyword = RadicalExecutionBackend(resources={"cores": 2}, raptor_config={"masters": [{"workers": [{}]}]}, name=None)
    assert keyword.name == "radical_pilot"
    assert keyword.raptor_options == {"workers": 1, "cores_per_worker": 1, "eager": True}
    assert RadicalExecutionBackend({"cores": 2}, {}).raptor_options == {"workers": 1, "cores_per_worker": 1, "eager": False}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"masters": [{"executable": "/path/to/master", "workers": [{}]}]}, "executable cannot be honoured"),
        ({"masters": [{"workers": [{"executable": "/path/to/worker", "arguments": ["-v"]}]}]}, "arguments, executable cannot be honoured"),
        ({"masters": [{"workers": [{"worker_type": "MPIWorker"}]}]}, "worker_type='MPIWorker'"),
        ({"masters": [{"workers": [{}]}, {"workers": [{}]}]}, "exactly one master"),
        ({"masters": [{"workers": []}]}, "non-empty 'workers'"),
        ({"masters": [{"ranks": 2, "workers": [{}]}]}, "master's ranks= must be 1"),
        ({"masters": [{"workers": [{"ranks": 1}, {"ranks": 2}]}]}, "same ranks x cores_per_rank"),
        ({"masters": [{"workers": [{"ranks": 0}]}]}, "positive int"),
        ({"master": []}, "unknown key"),
    ],
)
def test_raptor_config_that_cannot_be_honoured_is_refused(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RadicalExecutionBackend({"cores": 2}, config)


def test_constructor_shapes_that_are_mistakes() -> None:
    with pytest.raises(TypeError, match="second argument is raptor_config"):
        RadicalExecutionBackend({"cores": 2}, "my_name")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        RadicalExecutionBackend({"cores": 2}, {"masters": [{"workers": [{}]}]}, raptor={"workers": 1})
    with pytest.raises(TypeError, match="resources= must be a dict"):
        RadicalExecutionBackend(["local.localhost"])  # type: ignore[arg-type]
