"""Telemetry (rhapsody-telemetry) of a Session on the real Dragon engines,
under the launcher: task spans, counts, resource samples of each node of
the runtime (one on this box), read by sampler processes placed there."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from rhapsody import ComputeTask
from rhapsody.resources import NodeSample
from rhapsody.testing import tasks as fn
from rhapsody_dragon.batch import DragonBatchExecutionBackend
from rhapsody_dragon.pool import DragonPoolExecutionBackend
from rhapsody_dragon.processes import DragonProcessExecutionBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "rhapsody_telemetry" / "tests"))
from engine_run import check_run, telemetry_run


def _tasks() -> list[ComputeTask]:
    ok = [ComputeTask(function=fn.add, args=(i, 1)) for i in range(6)] + [ComputeTask(executable="/bin/true")]
    return [*ok, ComputeTask(function=fn.getpid), ComputeTask(function=fn.boom)]


@pytest.mark.parametrize("kind", ["dragon_v2", "dragon_v1"])
def test_dragon_session_telemetry(kind: str, tmp_path: Path) -> None:
    """Each span names where its task ran: V2, the pool worker process (host
    and pid: the pid a task sees); V1, the task's own Dragon process (host and
    puid: one per task)."""
    engine = DragonPoolExecutionBackend if kind == "dragon_v2" else DragonProcessExecutionBackend
    backend = engine(name=kind, num_workers=2)
    tasks = _tasks()
    telemetry, samples = asyncio.run(telemetry_run(backend, tmp_path, tasks))
    host = re.escape(socket.gethostname())
    pattern = rf"{host}/pid \d+" if kind == "dragon_v2" else rf"{host}/puid \d+"
    workers = check_run(telemetry, samples, kind, done=8, failed=1, error_type="TaskBoom", worker=pattern)
    # each node's samples name the host as the spans' workers do (one node here)
    assert {e.node_id for e in samples} == {socket.gethostname()} == {w.split("/")[0] for w in workers.values()}, samples
    if kind == "dragon_v2":
        functions = {w for uid, w in workers.items() if uid != tasks[6].uid}  # the executable runs in a child of a worker
        assert 1 <= len(functions) <= 2, workers  # two worker processes
        assert workers[tasks[7].uid] == f"{socket.gethostname()}/pid {tasks[7].return_value}"
    else:
        assert len(set(workers.values())) == len(tasks), workers  # a Dragon process per task


class _Events(logging.Handler):
    """RHAPSODY's log events, caught on the ``rhapsody`` logger itself: not
    pytest's caplog, whose handler on the root logger Dragon's Batch removes
    (its logging setup calls ``basicConfig(force=True)``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict):
            self.records.append(dict(record.msg))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == name]


@pytest.fixture
def events() -> Any:
    logger = logging.getLogger("rhapsody")
    handler, level = _Events(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _gone(pids: list[int], seconds: float = 60.0) -> list[int]:
    """The processes of ``pids`` still alive after up to ``seconds``."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while any(_alive(p) for p in pids) and loop.time() < until:
        await asyncio.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _dragon_nodes() -> list[str]:
    from dragon.native.machine import Node, System

    return [Node(h_uid).hostname for h_uid in System().nodes]


@pytest.mark.parametrize("make", [DragonPoolExecutionBackend, DragonProcessExecutionBackend, DragonBatchExecutionBackend])
def test_every_node_is_sampled_by_a_process_placed_there(make: Any, events: _Events) -> None:
    """One whole-node sample per node of ``System()`` (one here), named as
    ``task.worker`` names the host, read by a sampler process (not this one)
    that the backend's stop ends."""

    async def scenario() -> tuple[list[list[NodeSample]], list[dict[str, Any]], list[int]]:
        backend = await make(num_workers=1)
        try:
            rounds = [await backend.sample_resources(timeout=300) for _ in range(2)]
        finally:
            await backend.shutdown()
        ready = events.named("node_sampler.ready")
        return rounds, ready, await _gone([e["pid"] for e in ready])

    rounds, ready, left = asyncio.run(scenario())
    nodes = _dragon_nodes()
    for samples in rounds:
        whole = [s for s in samples if s.gpu_id is None]
        assert [s.node_id for s in whole] == [socket.gethostname()] * len(nodes), (samples, nodes)
        assert all(s.memory_percent is not None and 0 < s.memory_percent <= 100 for s in whole), samples
    assert all(s.cpu_percent is not None and 0 <= s.cpu_percent <= 100 for s in rounds[1]), rounds[1]
    assert sorted(e["dragon_host"] for e in ready) == sorted(nodes), ready
    assert all(e["node"] == socket.gethostname() and e["pid"] != os.getpid() for e in ready), ready
    assert left == [], f"sampler processes left after stop: {left}"


def test_a_killed_sampler_leaves_its_node_out_and_is_replaced(events: _Events) -> None:
    """A sampler process killed for real (SIGKILL): the next round leaves its
    node out with a warning, without failing; the round after samples the node
    again through a new sampler; tasks run throughout."""

    async def scenario() -> tuple[list[list[NodeSample]], list[int], list[int], str]:
        backend = await DragonPoolExecutionBackend(num_workers=1)
        try:
            first = await backend.sample_resources(timeout=300)
            killed = events.named("node_sampler.ready")[0]["pid"]
            os.kill(killed, signal.SIGKILL)
            assert await _gone([killed]) == []
            after_kill = await backend.sample_resources(timeout=300)
            again = await backend.sample_resources(timeout=300)
            task = (await backend.submit_tasks([ComputeTask(function=fn.add, args=(2, 3))]))[0]
            await asyncio.wait_for(asyncio.shield(task), 300)
            state = task.state.value
        finally:
            await backend.shutdown()
        pids = [e["pid"] for e in events.named("node_sampler.ready")]
        return [first, after_kill, again], pids, await _gone(pids), state

    (first, after_kill, again), pids, left, state = asyncio.run(scenario())
    host = socket.gethostname()
    assert [s.node_id for s in first] == [host] and after_kill == [] and [s.node_id for s in again] == [host]
    lost = events.named("node_sampler.lost")
    assert [(e["node"], e["pid"]) for e in lost] == [(host, pids[0])], lost
    assert len(pids) == 2 and pids[1] != pids[0], pids  # the replacement answered
    assert state == "DONE"
    assert left == [], f"sampler processes left after stop: {left}"
