"""What a closed pilot session leaves behind (issue #11, items 11 and 13):
listening sockets in this process, network exposure, files in the temp dir.

RP 1.103 binds its ZMQ sockets with a hard-coded ``tcp://*`` (radical.utils
``zmq_bind``, the registry ``Server`` and the client ``Proxy``), which no
option changes: those listen on every interface while the session runs. What
RP does let us choose is the address its processes advertise and connect to
(``RADICAL_DEFAULT_IFACE``): the backend picks loopback for a local pilot, and
the only listener RP binds to that address (the agent's) is then on 127.0.0.1.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import tempfile
from pathlib import Path

import psutil
import pytest
from procs import assert_nothing_left, group_members

from rhapsody import ComputeTask, Session, TaskState
from rhapsody.testing import tasks as fn
from rhapsody.testing.conformance import LoopRunner
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
        bound = {ip for _, ip in during if not ipaddress.ip_address(ip).is_unspecified}
        assert bound == {"127.0.0.1"}, f"listeners on a specific address must be on loopback: {during}"
        assert _listening(mine) == sockets_before, "a closed RP session must not keep ports open in this process"
        assert not _leftovers() - files_before, f"left in {tempfile.gettempdir()}: {_leftovers() - files_before}"
        assert list((tmp_path / str(round_)).rglob("radical.*/tmp/rp.agent_cfg.*")), "RP's temp files go under the work dir"
        assert_nothing_left(baseline, backend.rp_session.uid)
