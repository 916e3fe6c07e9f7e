"""Programs written the way rhapsody-py 0.6's docs and examples write them
(``tests/compat/programs``) run unchanged, each in a fresh interpreter with a
deadline, and print what they saw; the tests check it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).parent / "programs"
DEADLINE = 180  # seconds per program, on a loaded 2-core machine


def run_program(name: str, cwd: Path) -> tuple[list[str], str]:
    proc = subprocess.run(
        [sys.executable, str(PROGRAMS / f"{name}.py")], cwd=cwd, capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "never retrieved" not in proc.stderr, proc.stderr
    return proc.stdout.splitlines(), proc.stderr


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_quickstart_executables_and_functions(workdir: Path) -> None:
    lines, _ = run_program("quickstart", workdir)
    assert lines == [
        "submitted 24",
        "gathered 24 same=True",
        "True DONE out='from echo' value=None",
        "True DONE out='42' value=None",
        "True DONE out='squaring 9' value=81",
        "True DONE out='hello world' value='greeted world'",
        "greet stderr='warned world'",
        "name=echoer item=echoer routed to concurrent",
        "own output True",
    ]


def test_failures_raise_through_futures_but_not_wait_tasks(workdir: Path) -> None:
    lines, stderr = run_program("failures", workdir)
    assert lines == [
        "gather raised Broken: it broke",
        "exit error uid_ok=True code=3",
        "wait_tasks returned ['FAILED', 'FAILED']",
        "failed stderr has traceback True",
        "wait timed out with asyncio.TimeoutError",
    ]
    assert "Traceback" not in stderr, "a failed task the program never awaited printed nothing"


def test_backends_by_name_registry_constructors_and_callbacks(workdir: Path) -> None:
    lines, _ = run_program("backends_and_registry", workdir)
    assert lines == [
        "concurrent available True noop available True",
        "registered True",
        "labelled is LabelledBackend named labelled",
        "names positional concurrent noop True",
        "dict results one 6",
        "callbacks saw DONE ['dict.1', 'dict.2']",
        "mapper DONE True",
        "noop finished 1000 value True",
    ]


def test_tasks_as_dicts_routing_capture_and_logging(workdir: Path) -> None:
    lines, _ = run_program("tasks_as_dicts", workdir)
    warning = [line for line in lines if line.startswith("LOG ")]
    assert len(warning) == 1 and "WARNING rhapsody.task" in warning[0]
    assert "field=argumets" in warning[0] and "did_you_mean=arguments" in warning[0]
    assert [line for line in lines if not line.startswith("LOG ")] == [
        "dict keys ok True",
        "iteration matches True",
        "from_dict ComputeTask equal True same set 1 name first",
        "ai prompts ['one', 'two'] routed to ai",
        "ran on local other same process True",
        "capture file True to-file",
        "capture err err-file",
        "ai task DONE",
    ]
    session_dirs = [p for p in workdir.iterdir() if p.is_dir()]
    assert len(session_dirs) == 1, "artifacts go to <cwd>/<session uid>/"


def test_asyncflow_workflows_on_the_default_backend(workdir: Path) -> None:
    lines, _ = run_program("asyncflow_workflows", workdir)
    assert lines == [
        "workflows 64 same True",
        "executable listed",
        "failure raised RuntimeError mentions cause True",
        "backend after shutdown STOPPED",
    ]
