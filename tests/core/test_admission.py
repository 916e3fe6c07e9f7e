"""What core decides about a task before any engine sees it
(`rhapsody.execution.admission`): the one shell rule, the launch spec, and
the ``task_backend_specific_kwargs`` keys a backend does not understand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from toys import AsyncioEngine, ManualEngine, run

from rhapsody import Backend, ComputeTask, TaskState, TaskValidationError
from rhapsody.engine import TaskHandle
from rhapsody.execution.admission import argv_of
from rhapsody.testing import tasks as fn


# ------------------------------------------------------------------ the shell rule
@pytest.mark.parametrize(
    ("kw", "argv"),
    [
        ({"executable": "/bin/echo", "arguments": ["a b", "$HOME"]}, ["/bin/echo", "a b", "$HOME"]),
        ({"executable": "/bin/true"}, ["/bin/true"]),
        ({"executable": "echo hi | tr a-z A-Z"}, ["/bin/sh", "-c", "echo hi | tr a-z A-Z"]),
        ({"executable": "  /bin/true  "}, ["  /bin/true  "]),
        (
            {"executable": "/bin/echo", "arguments": ["$HOME"], "task_backend_specific_kwargs": {"shell": True}},
            ["/bin/sh", "-c", "/bin/echo $HOME"],
        ),
        ({"executable": "echo hi", "task_backend_specific_kwargs": {"shell": False}}, ["echo hi"]),
    ],
    ids=["arguments-no-shell", "bare-program", "command-line", "padded-program", "shell-true", "shell-false"],
)
def test_shell_rule(kw: dict[str, Any], argv: list[str]) -> None:
    assert argv_of(ComputeTask(**kw)) == argv


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_program_path_with_a_space_runs_that_file(tmp_path: Path) -> None:
    prog = _script(tmp_path / "my tools" / "hello prog", "echo ran the file")
    t = ComputeTask(executable=str(prog))
    assert argv_of(t) == [str(prog)], "an existing file is a program, not a command line"
    command_line = ComputeTask(executable=f"{tmp_path}/my tools/hello prog")  # the same path
    assert argv_of(command_line) == [str(prog)]

    async def go() -> None:
        async with Backend(AsyncioEngine(), "asyncio") as backend:
            await backend.submit_tasks([t])
            await t

    run(go())
    assert t.state is TaskState.DONE and t.stdout == "ran the file\n"


def test_command_line_runs_in_a_shell() -> None:
    t = ComputeTask(executable="echo one two | tr a-z A-Z")

    async def go() -> None:
        async with Backend(AsyncioEngine(), "asyncio") as backend:
            await backend.submit_tasks([t])
            await t

    run(go())
    assert t.stdout == "ONE TWO\n"


# ------------------------------------------------------------------ launch spec
def _submit_to_manual(*tasks: ComputeTask, engine: Any = None) -> ManualEngine:
    engine = engine or ManualEngine()

    async def go() -> None:
        async with Backend(engine, "m") as backend:
            await backend.submit_tasks(list(tasks))

    run(go())
    return engine  # type: ignore[no-any-return]


def test_launch_spec_resolves_env_cwd_ranks_and_timeout(tmp_path: Path) -> None:
    t = ComputeTask(
        executable="/bin/echo",
        arguments=["x"],
        uid="spec",
        timeout=7,
        resources={"ranks": 3},
        task_backend_specific_kwargs={"env": {"N": 3, "F": 1.5, "S": "s"}, "cwd": tmp_path},
    )
    func = ComputeTask(function=fn.noop, uid="func")
    engine = _submit_to_manual(t, func)
    spec = engine.handles["spec"].launch
    assert spec is not None
    assert spec.argv == ["/bin/echo", "x"] and spec.uid == "spec"
    assert spec.env == {"N": "3", "F": "1.5", "S": "s"}, "env values become strings"
    assert spec.cwd == str(tmp_path) and spec.ranks == 3 and spec.timeout == 7
    assert spec.stdout_path is None and spec.stderr_path is None
    assert engine.handles["func"].launch is None, "a function has no launch spec"


def test_env_values_reach_the_program_as_strings() -> None:
    t = ComputeTask(executable="/bin/sh", arguments=["-c", "echo $N-$F"], task_backend_specific_kwargs={"env": {"N": 3, "F": 0.5}})

    async def go() -> None:
        async with Backend(AsyncioEngine(), "asyncio") as backend:
            await backend.submit_tasks([t])
            await t

    run(go())
    assert t.stdout == "3-0.5\n"


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"env": ["A=1"]}, "task_backend_specific_kwargs['env']", "must be a dict"),
        ({"cwd": 5}, "task_backend_specific_kwargs['cwd']", "must be a path"),
    ],
)
def test_malformed_env_or_cwd_fails_the_task(kw: dict[str, Any], field: str, words: str) -> None:
    t = ComputeTask(executable="/bin/true", uid="bad-kw", task_backend_specific_kwargs=kw)
    engine = _submit_to_manual(t)
    assert engine.received == [] and t.state is TaskState.FAILED
    assert isinstance(t.exception, TaskValidationError) and t.exception.field == field and words in str(t.exception)


# ------------------------------------------------------------------ unknown keys
class QueueEngine(ManualEngine):
    accepted_keys = frozenset({"queue"})


def test_unknown_key_fails_the_task_with_a_hint() -> None:
    typo = ComputeTask(executable="/bin/pwd", uid="typo", task_backend_specific_kwargs={"cwdd": "/tmp"})
    engine_typo = ComputeTask(executable="/bin/true", uid="queu", task_backend_specific_kwargs={"queu": "debug"})
    known = ComputeTask(executable="/bin/true", uid="known", task_backend_specific_kwargs={"queue": "debug", "cwd": "/"})
    func_known = ComputeTask(function=fn.noop, uid="fknown", task_backend_specific_kwargs={"queue": "debug"})
    engine = _submit_to_manual(typo, engine_typo, known, func_known, engine=QueueEngine())
    assert engine.received == ["known", "fknown"], "a task with an unknown key never reaches the engine"
    for t, key, hint in ((typo, "cwdd", "cwd"), (engine_typo, "queu", "queue")):
        assert t.state is TaskState.FAILED and isinstance(t.exception, TaskValidationError)
        text = str(t.exception)
        assert t.uid in text and repr(key) in text and f"did you mean {hint!r}" in text and "queue" in text


def test_unknown_key_without_a_near_miss() -> None:
    exe = ComputeTask(executable="/bin/true", task_backend_specific_kwargs={"zzz": 1})
    func = ComputeTask(function=fn.noop, task_backend_specific_kwargs={"zzz": 1})
    _submit_to_manual(exe, func)
    for t in (exe, func):
        assert t.state is TaskState.FAILED and "'zzz'" in str(t.exception) and "did you mean" not in str(t.exception)
    assert "it accepts: cwd, env, shell" in str(exe.exception) and "it accepts: none" in str(func.exception)


@pytest.mark.parametrize("key", ["cwd", "env", "shell"])
def test_launch_keys_on_a_function_fail_it(key: str) -> None:
    t = ComputeTask(function=fn.noop, task_backend_specific_kwargs={key: {"A": "1"} if key == "env" else "/tmp"})
    engine = _submit_to_manual(t)
    assert engine.received == [] and t.state is TaskState.FAILED
    assert isinstance(t.exception, TaskValidationError) and "applies to executables only" in str(t.exception)
    assert repr(key) in str(t.exception)


def test_other_tasks_of_the_batch_still_run() -> None:
    good = ComputeTask(function=fn.add, args=(1, 2))
    bad = ComputeTask(function=fn.add, args=(1, 2), task_backend_specific_kwargs={"envv": {}})

    class Counting(AsyncioEngine):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[list[str]] = []

        async def submit(self, handles: Sequence[TaskHandle]) -> None:
            self.batches.append([h.uid for h in handles])
            await super().submit(handles)

    engine = Counting()

    async def go() -> None:
        async with Backend(engine, "asyncio") as backend:
            await backend.submit_tasks([good, bad])
            await good

    run(go())
    assert good.return_value == 3 and bad.state is TaskState.FAILED
    assert engine.batches == [[good.uid]]
