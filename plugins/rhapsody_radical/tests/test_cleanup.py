"""What a pilot session exposes and leaves behind (issue #11, items 11 and 13):
listening sockets, network exposure, files in the temp dir.

RP 1.103 binds its ZMQ sockets with a hard-coded ``tcp://*`` (radical.utils
``zmq_bind``, the registry ``Server`` and the client ``Proxy``), which no
option changes. For a local pilot the backend makes RP's processes advertise
loopback (``RADICAL_DEFAULT_IFACE``) and bind it (`rhapsody_radical.loopback`,
in this process and, through a ``sitecustomize`` hook, in RP's own).
"""

from __future__ import annotations

import asyncio
import glob
import ipaddress
import os
import tempfile
import time
import traceback
from pathlib import Path

import psutil
import pytest
from procs import assert_nothing_left, group_members, listening_sockets, socket_owners

from rhapsody import ComputeTask, Session, TaskState
from rhapsody.testing import tasks as fn
from rhapsody.testing.conformance import LoopRunner
from rhapsody_radical import loopback
from rhapsody_radical.backend import RadicalExecutionBackend
from rhapsody_radical.environment import processes_of

# what RP 1.103 (and psij under it) used to leave in the temp dir per session
_LEFTOVERS = ("rp.agent_cfg.*", "rp.session.*", "tmp*.nodelist", "rp_agent_tmp*")


def _leftovers() -> set[str]:
    tmp = tempfile.gettempdir()
    return {path for pattern in _LEFTOVERS for path in glob.glob(os.path.join(tmp, pattern))}


def _listening(pids: set[int] | list[int]) -> list[tuple[int, str]]:
    wanted = set(pids)
    return [(c.pid, c.laddr.ip) for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in wanted]


@pytest.fixture
def run():
    runner = LoopRunner(deadline=400.0)
    yield runner
    runner.close()


async def _one_session(backend: RadicalExecutionBackend, work_dir: Path, tasks: list[ComputeTask]) -> list[tuple[int, str]]:
    """Run an executable, then a function (raptor then holds both cores of this
    pilot); return what the session and this process listen on meanwhile."""
    async with Session([backend], work_dir=work_dir) as session:
        for task in tasks:
            await session.submit_tasks([task])
            await session.wait_tasks([task], timeout=120)
        return _listening([*processes_of(backend.rp_session.uid), os.getpid()])


def test_closed_sessions_leave_no_socket_here_and_nothing_in_tmp(run: LoopRunner, tmp_path: Path) -> None:
    """Two sessions one after the other. Before: each closed session left 3
    sockets listening in this process (on 0.0.0.0), and ``rp.agent_cfg.*``,
    an empty ``rp.session.*/`` and a ``tmp*.nodelist`` in /tmp."""
    baseline = group_members()
    mine = {os.getpid()}
    sockets_before, files_before = _listening(mine), _leftovers()
    for round_ in range(2):
        backend = RadicalExecutionBackend(resources={"runtime": 10, "cores": 2})
        tasks = [ComputeTask(executable="/bin/echo", arguments=[str(round_)]), ComputeTask(function=fn.add, args=(round_, 1))]
        during = run(_one_session(backend, tmp_path / str(round_), tasks))
        assert [t.state for t in tasks] == [TaskState.DONE, TaskState.DONE], [t.exception for t in tasks]
        assert during and {ip for _, ip in during} == {"127.0.0.1"}, f"a local pilot listens on loopback only: {during}"
        assert _listening(mine) == sockets_before, "a closed RP session must not keep ports open in this process"
        assert not _leftovers() - files_before, f"left in {tempfile.gettempdir()}: {_leftovers() - files_before}"
        assert list((tmp_path / str(round_)).rglob("radical.*/tmp/rp.agent_cfg.*")), "RP's temp files go under the work dir"
        assert_nothing_left(baseline, backend.rp_session.uid)


def test_a_session_closes_no_descriptor_twice(run: LoopRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``os.close`` in this process while a session opens, runs a task and
    closes is watched. A second close of the same number is a race with every
    thread that opens a file or socket meanwhile: it closed one of libzmq's
    sockets and libzmq aborted a benchmark process ("Bad file descriptor
    (src/stream_connecter_base.cpp:131)"). Before: RP's file-backed id counter
    (a session's, its managers', components' and pilot's ids) closed its file twice."""
    twice: list[str] = []
    real_close = os.close

    def watched_close(fd: int) -> None:
        try:
            real_close(fd)
        except OSError as exc:
            twice.append(f"fd {fd}: {exc} at {traceback.format_stack(limit=4)[:-1]}")
            raise

    monkeypatch.setattr(os, "close", watched_close)
    backend = RadicalExecutionBackend(resources={"runtime": 10, "cores": 2})
    task = ComputeTask(executable="/bin/echo", arguments=["once"])
    run(_one_session(backend, tmp_path, [task]))
    assert task.state == TaskState.DONE, task.exception
    assert twice == [], f"descriptors closed when already closed: {twice}"


def _exposed(env: dict[str, str]) -> list[str]:
    """What of the loopback hook a task's environment carries."""
    found = [loopback.MARKER] if loopback.MARKER in env else []
    return found + [f"{key}={value}" for key, value in env.items() if loopback.HOOK_DIR in value]


def _ours(sockets: dict[int, tuple[str, int]], sid: str) -> dict[int, tuple[str, int, int]]:
    """The listening sockets held by this process, its descendants or RP session ``sid``'s processes
    (other test runs on this machine may listen meanwhile)."""
    pids = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True)), *processes_of(sid)}
    owners = socket_owners()
    return {inode: (*where, owners[inode]) for inode, where in sockets.items() if owners.get(inode) in pids}


async def _listening_while_running(backend: RadicalExecutionBackend, work_dir: Path) -> tuple[dict, dict, dict, set[int]]:
    """A function task (raptor master and worker up), and an executable task
    still running, when the listening sockets are read."""

    def environment() -> dict[str, str]:  # nested: travels by value to the raptor worker
        return dict(os.environ)

    before = listening_sockets()
    env_file, stop = work_dir / "env", work_dir / "stop"
    script = 'env -0 > "$0.tmp" && mv "$0.tmp" "$0"; while [ ! -e "$1" ]; do sleep 0.2; done'
    running = ComputeTask(executable="/bin/sh", arguments=["-c", script, str(env_file), str(stop)])
    call = ComputeTask(function=environment)
    async with Session([backend], work_dir=work_dir) as session:
        await session.submit_tasks([running, call])
        await session.wait_tasks([call], timeout=180)
        deadline = time.monotonic() + 120
        while not env_file.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert env_file.exists(), f"the executable task did not start: {running.state} {running.exception}"
        new = {inode: where for inode, where in listening_sockets().items() if inode not in before}
        during = _ours(new, backend.rp_session.uid)
        stop.touch()
        await session.wait_tasks([running], timeout=120)
    assert [running.state, call.state] == [TaskState.DONE, TaskState.DONE], [running.exception, call.exception]
    task_env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    return during, task_env, call.return_value, set(listening_sockets())


def test_local_pilot_listens_on_loopback_only_and_tasks_do_not_see_the_hook(run: LoopRunner, tmp_path: Path) -> None:
    """While a local pilot runs raptor and an executable task, every TCP socket
    that started listening (this process, RP's bridges and components here and
    in the agent, raptor's master and worker) is bound to loopback; after close
    none is left. Neither task sees the hook that makes RP's processes do so.
    Before: about 60 of them listened on 0.0.0.0."""
    backend = RadicalExecutionBackend(resources={"runtime": 10, "cores": 4}, local_cores=4, raptor={"eager": True})
    during, task_env, call_env, after = run(_listening_while_running(backend, tmp_path))
    exposed = sorted(f"{ip}:{port} (pid {pid})" for ip, port, pid in during.values() if not ipaddress.ip_address(ip).is_loopback)
    assert len(during) > 20, f"RP's listeners were not found: {during}"
    assert not exposed, f"{len(exposed)} of {len(during)} RP listeners are not on loopback: {exposed}"
    # close() returns once RP's processes were told to go; one may take a moment to release its sockets
    deadline = time.monotonic() + 30
    while set(during) & after and time.monotonic() < deadline:
        time.sleep(0.5)
        after = set(listening_sockets())
    assert not set(during) & after, f"still listening 30 s after close: {[during[i] for i in set(during) & after]}"
    assert not _exposed(task_env), f"an executable task sees the hook: {_exposed(task_env)}"
    assert not _exposed(call_env), f"a function task sees the hook: {_exposed(call_env)}"
    assert "RP_TASK_ID" in task_env and "RP_TASK_ID" in call_env, "the environments read are the tasks' own"
