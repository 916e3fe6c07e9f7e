"""The behaviour every RHAPSODY backend must show, as a pytest class to subclass.

Each subclass gets one event loop and one started backend per class (a pilot or
a cluster is expensive), shared by its tests through a Session; tests that need
a backend of their own (shutdown) build one with `make_backend`. The checks
live in topic modules (`executable_checks`, `function_checks`,
`control_checks`); this class combines them.
"""

from __future__ import annotations

from rhapsody.testing.control_checks import ControlChecks
from rhapsody.testing.executable_checks import ExecutableChecks
from rhapsody.testing.function_checks import FunctionChecks
from rhapsody.testing.sampling_checks import SamplingChecks
from rhapsody.testing.waiting import (
    LoopRunner,
    await_task,
    pid_alive,
    sleeper,
    wait_for_file,
    wait_for_state,
    wait_until_gone,
)
from rhapsody.testing.worker_checks import WorkerChecks

__all__ = [
    "BackendConformance",
    "LoopRunner",
    "await_task",
    "pid_alive",
    "sleeper",
    "wait_for_file",
    "wait_for_state",
    "wait_until_gone",
]


class BackendConformance(ExecutableChecks, FunctionChecks, ControlChecks, SamplingChecks, WorkerChecks):
    """Subclass, override `make_backend`, and set the class attributes
    (`concurrency`, `runs_functions`, `runs_executables`, `runs_multi_rank`,
    `burst_size`, `deadline`, `start_timeout`, `samples_resources`, `reports_worker`) to what the
    engine really offers."""
