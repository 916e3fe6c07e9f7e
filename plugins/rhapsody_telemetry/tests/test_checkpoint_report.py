"""The JSONL checkpoint of a real run (read while the run goes on, and after
a crash cut its last line) and ``rhapsody report FILE`` made from it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rhapsody_telemetry.checkpoint import read_checkpoint
from rhapsody_telemetry.report.command import write_report

from rhapsody import ComputeTask, Session
from rhapsody_concurrent.backend import ConcurrentExecutionBackend


def fails() -> None:
    raise OSError("disk full, on purpose")


def _sections(path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in read_checkpoint(path):
        out.setdefault(record["section"], []).append(record)
    return out


def _real_run(work_dir: Path) -> tuple[Path, dict[str, Any]]:
    """12 short tasks, one failing, one canceled; the checkpoint is read twice while it runs."""

    async def go() -> tuple[Path, dict[str, Any]]:
        session = Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=work_dir)
        telemetry = await session.start_telemetry(
            checkpoint_path=work_dir / "telemetry", checkpoint_interval=0.3, resource_poll_interval=0.2
        )
        path = telemetry.checkpoint_file
        first = [ComputeTask(function=time.sleep, args=(0.05,)) for _ in range(6)] + [ComputeTask(function=fails)]
        await session.submit_tasks(first)
        await session.wait_tasks(first, timeout=120)
        deadline = time.monotonic() + 60
        while len(_sections(path).get("span", [])) < len(first):  # the flush every 0.3 s made them readable
            assert time.monotonic() < deadline, "checkpoint: spans of ended tasks not on disk within 60 s"
            await asyncio.sleep(0.1)
        during = {k: len(v) for k, v in _sections(path).items()}
        second = [ComputeTask(function=time.sleep, args=(0.05,)) for _ in range(4)] + [
            ComputeTask(executable="/bin/sleep", arguments=["60"])
        ]
        await session.submit_tasks(second)
        await session.wait_tasks(second[:-1], timeout=120)
        await session.close()  # cancels the sleeper
        return path, during

    return asyncio.run(go())


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return _real_run(tmp_path_factory.mktemp("run"))


def test_checkpoint_holds_events_spans_and_metrics(run_checkpoint: tuple[Path, dict[str, Any]]) -> None:
    path, during = run_checkpoint
    assert path.name.endswith(".telemetry.jsonl")
    assert during["span"] >= 7 and during["event"] >= 14  # readable before the session ended
    sections = _sections(path)
    (header,) = sections["session"]
    assert header["session_id"] == path.name.split(".")[0] + "." + path.name.split(".")[1]
    tasks = [s for s in sections["span"] if s["name"] == "task"]
    assert len(tasks) == 12 and len({s["attributes"]["task_id"] for s in tasks}) == 12  # each span once
    assert sorted(s["attributes"]["status"] for s in tasks).count("canceled") == 1
    assert [s["attributes"]["error_type"] for s in tasks if s["attributes"]["status"] == "failed"] == ["OSError"]
    kinds = [e["event_type"] for e in sections["event"]]
    assert kinds.count("TaskCompleted") == 10 and kinds.count("TaskFailed") == 1 and kinds.count("TaskCanceled") == 1
    assert kinds[-1] == "SessionEnded" and "ResourceUpdate" in kinds
    assert sections["metric"][-1]["backends"]["local"]["completed"] == 10
    # where each task ran: a pool thread of this host, or the sleeper's own process
    host = socket.gethostname()
    ran = [s["attributes"] for s in tasks if "started_at" in s["attributes"]]
    assert len(ran) >= 11 and all("worker" not in s["attributes"] for s in tasks if "started_at" not in s["attributes"])
    threads = {a["worker"] for a in ran if a["executable"] != "/bin/sleep"}
    assert threads and threads <= {f"{host}/rhapsody-local-0", f"{host}/rhapsody-local-1"}, threads
    assert all(re.fullmatch(rf"{re.escape(host)}/pid \d+", a["worker"]) for a in ran if a["executable"] == "/bin/sleep")
    started = [e for e in sections["event"] if e["event_type"] == "TaskStarted"]
    assert len(started) == len(ran) and all(e["attributes"]["worker"].startswith(host + "/") for e in started)


def test_rhapsody_report_command_makes_a_self_contained_page(run_checkpoint: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _ = run_checkpoint
    output = tmp_path / "out" / "report.html"
    rhapsody = Path(sys.executable).with_name("rhapsody")
    done = subprocess.run([str(rhapsody), "report", str(path), "-o", str(output)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(output)
    page = output.read_text()
    assert page.count("<svg") == 7  # timeline, running, states, wait, run time, CPU, memory
    for title in (
        "Task timeline per backend",
        "Tasks running over time",
        "Tasks by final state",
        "Queue wait",
        "Run time",
        "CPU",
        "Memory",
    ):
        assert title in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)  # nothing fetched from elsewhere
    assert page.count("<title>task.") == 12  # one timeline bar per task, its uid in the tooltip
    assert "OSError" in page and "12 tasks" in page
    assert "<td>local</td><td>12</td><td>10</td><td>1</td><td>1</td>" in page
    workers = {s["attributes"]["worker"] for s in read_checkpoint(path) if s["section"] == "span" and "worker" in s["attributes"]}
    for worker in workers:  # one group of timeline rows per worker, labelled with it
        assert f"<title>local {worker}</title>" in page


def test_report_of_a_checkpoint_cut_by_a_crash(run_checkpoint: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _ = run_checkpoint
    lines = path.read_text().splitlines(keepends=True)
    spans = [i for i, line in enumerate(lines) if '"section":"span"' in line]
    cut = tmp_path / "cut.telemetry.jsonl"
    # the run died while writing a span line: everything before it counts, the half line is skipped
    cut.write_text("".join(lines[: spans[5]]) + lines[spans[5]][:40])
    page = write_report(cut).read_text()
    assert "still running, or stopped without a last flush" in page
    assert page.count("<title>task.") == sum(1 for line in lines[: spans[5]] if '"name":"task"' in line)


def test_report_refuses_a_file_that_is_no_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.jsonl"
    bogus.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    env = {**os.environ}
    rhapsody = Path(sys.executable).with_name("rhapsody")
    done = subprocess.run([str(rhapsody), "report", str(bogus)], capture_output=True, text=True, timeout=300, check=False, env=env)
    assert done.returncode == 1
    assert "line 1 has no 'section'" in done.stderr and str(bogus) in done.stderr
    missing = subprocess.run(
        [str(rhapsody), "report", str(tmp_path / "nope.jsonl")], capture_output=True, text=True, timeout=300, check=False
    )
    assert missing.returncode == 1 and "FileNotFoundError" in missing.stderr
    assert json.loads('{"ok": true}')["ok"]


def test_report_groups_workers_of_one_task_each(tmp_path: Path) -> None:
    """Ten executables on the local pool are ten processes, each a worker of
    one task: the timeline draws them as one group (with a pool thread that
    happened to run one function only), next to the pool's threads."""

    async def go() -> Path:
        async with Session(backends=[await ConcurrentExecutionBackend(name="local", cores=2)], work_dir=tmp_path) as session:
            telemetry = await session.start_telemetry(checkpoint_path=tmp_path / "telemetry")
            tasks = [ComputeTask(executable="/bin/true") for _ in range(10)] + [
                ComputeTask(function=time.sleep, args=(0.01,)) for _ in range(6)
            ]
            await session.submit_tasks(tasks)
            await session.wait_tasks(tasks, timeout=120)
        return Path(telemetry.checkpoint_file)

    page = write_report(asyncio.run(go())).read_text()
    labels = re.findall(r'class="tick" text-anchor="end">[^<]*<title>([^<]*)</title>', page)
    host = socket.gethostname()
    *threads, merged = labels
    assert merged in ("local: 10 workers of one task each", "local: 11 workers of one task each"), labels
    assert 1 <= len(threads) <= 12 - int(merged.split()[1]), labels  # a thread that ran one function is in the merged group
    assert all(re.fullmatch(rf"local {re.escape(host)}/rhapsody-local-[01]", t) for t in threads), labels
    assert page.count("<title>task.") == 16
