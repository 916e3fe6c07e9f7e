"""The journal on the real concurrent backend: what a rerun restores, what it
runs again, identity, refusals, and the ``rhapsody journal`` command."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from toys import Recorder, run

from rhapsody import ComputeTask, Session, TaskState
from rhapsody.cli import main
from rhapsody.errors import BackendNotFoundError, JournalError
from rhapsody.testing import tasks as fn
from rhapsody.testing.resume import done_in_journal
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


def _run(tmp_path: Path, journal: Path, tasks: list[Any]) -> Session:
    async def go() -> Session:
        async with Session(backends=[ConcurrentExecutionBackend(cores=2)], work_dir=tmp_path, journal=journal) as s:
            await s.submit_tasks(tasks)
            await s.wait_tasks(tasks)
        return s

    return run(go())  # type: ignore[no-any-return]


def _workload(tmp_path: Path) -> list[Any]:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    out = tmp_path / "out.txt"
    return [
        ComputeTask(function=fn.journal_work, args=(1, str(markers))),
        ComputeTask(function=fn.journal_work, args=(2, str(markers))),
        ComputeTask(executable="/bin/sh", arguments=["-c", f"echo made > {out}; echo out; echo err >&2"], output_files=[str(out)]),
        ComputeTask(executable="/bin/sh", arguments=["-c", "echo said; exit 3"], uid="fails"),
    ]


def _view(t: Any) -> tuple[Any, ...]:
    return (t.state, t.return_value, t.stdout, t.stderr, t.exit_code, t.attempt)


def test_rerun_restores_done_tasks_and_runs_the_rest(tmp_path: Path, recorder: Recorder) -> None:
    journal = tmp_path / "run.db"
    first = _workload(tmp_path)
    s1 = _run(tmp_path, journal, first)
    assert [t.state for t in first] == [TaskState.DONE] * 3 + [TaskState.FAILED]
    assert s1.journal is not None and s1.journal.restored == 0

    second = _workload(tmp_path)
    s2 = _run(tmp_path, journal, second)
    assert s2.journal is not None and s2.journal.restored == 3
    assert [_view(t) for t in second[:3]] == [_view(t) for t in first[:3]]
    assert [t.timestamps for t in second[:3]] == [t.timestamps for t in first[:3]], "restored tasks keep the first run's times"
    assert (tmp_path / "markers" / "1").read_text().split() == ["?"], "a DONE task ran again"
    assert second[3].state is TaskState.FAILED and second[3].exit_code == 3  # a FAILED task runs again
    assert recorder.states_of(second[0].uid) == ["SUBMITTED", "DONE"]
    # awaiting a restored task works as for one that ran
    assert run(_await(second[0])) is second[0]


async def _await(t: Any) -> Any:
    return await t


def test_a_missing_output_file_runs_its_task_again(tmp_path: Path) -> None:
    journal = tmp_path / "run.db"
    _run(tmp_path, journal, _workload(tmp_path))
    (tmp_path / "out.txt").unlink()
    second = _workload(tmp_path)
    s2 = _run(tmp_path, journal, second)
    assert s2.journal is not None and s2.journal.restored == 2
    assert (tmp_path / "out.txt").read_text().strip() == "made"


def test_identical_descriptions_are_told_apart_by_order(tmp_path: Path) -> None:
    journal = tmp_path / "run.db"
    markers = tmp_path / "m"
    markers.mkdir()
    twins = [ComputeTask(function=fn.journal_work, args=(7, str(markers))) for _ in range(2)]
    _run(tmp_path, journal, twins)
    again = [ComputeTask(function=fn.journal_work, args=(7, str(markers))) for _ in range(3)]
    s = _run(tmp_path, journal, again)
    assert s.journal is not None and s.journal.restored == 2
    assert (markers / "7").read_text().split() == ["?", "?", "?"], "two restored, the third ran"


def test_what_has_no_stable_identity_is_refused_before_anything_runs(tmp_path: Path) -> None:
    journal = tmp_path / "run.db"
    fine = ComputeTask(function=fn.add, args=(1, 2))
    for bad, what in (
        (ComputeTask(function=lambda: 1), "no import name"),
        (ComputeTask(function=fn.echo, args=(object(),)), "object"),
    ):
        with pytest.raises(JournalError, match=what):
            _run(tmp_path, journal, [fine, bad])
        assert fine.state is TaskState.NEW and bad.state is TaskState.NEW
    named = ComputeTask(function=lambda: 1, uid="my-lambda")  # a uid of its own: journaled by it
    _run(tmp_path, journal, [named])
    assert named.state is TaskState.DONE


def test_a_file_that_is_no_journal_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not a database at all" * 100)
    with pytest.raises(JournalError, match=r"junk\.db"):
        Session(backends=[ConcurrentExecutionBackend()], journal=junk)


def test_journal_command_counts_states_and_lists_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "run.db"
    _run(tmp_path, journal, _workload(tmp_path))
    assert main(["journal", str(journal)]) == 0
    text = capsys.readouterr().out
    assert "4 tasks, 1 runs" in text and "DONE       3" in text and "FAILED     1" in text
    assert "fails (attempts 1, run 1): TaskExecutionError" in text and "exited with code 3" in text
    assert main(["journal", "--json", str(journal)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["states"] == {"DONE": 3, "FAILED": 1} and data["failed"][0]["uid"] == "fails"
    assert main(["journal", str(tmp_path / "none.db")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_journal_write_is_durable_without_close(tmp_path: Path) -> None:
    """What a run recorded is in the file before the session closes (a kill loses only the last wake-up)."""
    journal = tmp_path / "run.db"
    t = ComputeTask(function=fn.add, args=(2, 2), uid="early")

    async def go() -> dict[str, Any]:
        async with Session(backends=[ConcurrentExecutionBackend()], work_dir=tmp_path, journal=journal) as s:
            await s.submit_tasks([t])
            await t
            for _ in range(200):  # the writer thread commits soon after the wake-up
                found = done_in_journal(journal)
                if found:
                    return found
                await asyncio.sleep(0.02)
            return {}

    assert "uid:early" in run(go())


def test_a_session_that_cannot_be_built_leaves_no_journal_writer(tmp_path: Path) -> None:
    with pytest.raises(BackendNotFoundError):
        Session(backends=["no-such-backend"], journal=tmp_path / "run.db")
    assert not [t for t in threading.enumerate() if t.name == "rhapsody-journal"]


def test_a_refused_batch_counts_no_duplicates(tmp_path: Path) -> None:
    """Refused, then sent again without the bad task: numbered as if never tried, so a rerun finds it."""
    journal = tmp_path / "run.db"
    markers = tmp_path / "m"
    markers.mkdir()

    async def go(first_refused: bool) -> Session:
        async with Session(backends=[ConcurrentExecutionBackend()], work_dir=tmp_path, journal=journal) as s:
            if first_refused:
                with pytest.raises(JournalError):
                    await s.submit_tasks([ComputeTask(function=fn.journal_work, args=(3, str(markers))), ComputeTask(function=lambda: 0)])
            t = ComputeTask(function=fn.journal_work, args=(3, str(markers)))
            await s.submit_tasks([t])
            await t
        return s

    run(go(True))
    second = run(go(False))
    assert second.journal is not None and second.journal.restored == 1
    assert (markers / "3").read_text().split() == ["?"]


def test_tasks_of_two_backends_are_journaled_and_restored(tmp_path: Path) -> None:
    journal = tmp_path / "run.db"
    markers = tmp_path / "m"
    markers.mkdir()

    async def go() -> tuple[Session, list[Any]]:
        backends = [ConcurrentExecutionBackend(name="a"), ConcurrentExecutionBackend(name="b")]
        tasks = [ComputeTask(function=fn.journal_work, args=(i, str(markers)), backend="ab"[i % 2]) for i in range(4)]
        async with Session(backends=backends, work_dir=tmp_path, journal=journal) as s:
            await s.submit_tasks(tasks)
            await s.wait_tasks(tasks)
        return s, tasks

    _, first = run(go())
    second_session, second = run(go())
    assert second_session.journal is not None and second_session.journal.restored == 4
    assert [t.return_value for t in second] == [t.return_value for t in first]
    assert [t.backend for t in second] == ["a", "b", "a", "b"]
    assert all((markers / str(i)).read_text().split() == ["?"] for i in range(4))
