"""The fixtures and knobs every part of the conformance suite shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rhapsody.execution.backend import Backend
from rhapsody.session import Session
from rhapsody.task import BaseTask
from rhapsody.testing.waiting import LoopRunner


class SessionFixtures:
    """A session on the backend under test, shared by a test class, and a
    `submit` that runs tasks through it: the fixtures of both suites."""

    #: seconds a single test step may take before it counts as a hang
    deadline: float = 180.0
    #: the prefix of the session's work directory
    work_dir_prefix: str = "conformance"

    def make_backend(self) -> Backend:
        raise NotImplementedError("override make_backend() to return an unstarted backend")

    @pytest.fixture(scope="class")
    @classmethod
    def run(cls) -> Iterator[LoopRunner]:
        runner = LoopRunner(cls.deadline)
        yield runner
        runner.close()

    @pytest.fixture(scope="class")
    @classmethod
    def session(cls, run: LoopRunner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
        backend = cls().make_backend()
        session = Session(backends=[backend], work_dir=tmp_path_factory.mktemp(cls.work_dir_prefix))
        run(session.start())  # after Session set the work dir: engines put their sandboxes there
        yield session
        run(session.close())

    @pytest.fixture
    def submit(self, run: LoopRunner, session: Session) -> Any:
        """``submit(*tasks, wait=True)`` -> the tasks, after they ended (or not)."""

        def _submit(*tasks: BaseTask, wait: bool = True) -> list[BaseTask]:
            async def go() -> list[BaseTask]:
                await session.submit_tasks(list(tasks))
                if wait:
                    await session.wait_tasks(list(tasks))
                return list(tasks)

            return run(go())  # type: ignore[no-any-return]

        return _submit


class ConformanceBase(SessionFixtures):
    """Subclass, override `make_backend`, and set the class attributes to what
    the engine really offers."""

    #: how many 1-core tasks the backend runs at once (queued-cancel test fills these)
    concurrency: int = 2
    #: size of the burst test
    burst_size: int = 1000
    #: seconds a task may take to reach RUNNING in a loaded engine
    start_timeout: float = 60.0
    #: whether function tasks are supported by this backend
    runs_functions: bool = True
    #: whether executables are supported
    runs_executables: bool = True
    #: whether multi-rank executables run (``Resources(ranks=2)``); if not, they must FAIL, not run wrongly
    runs_multi_rank: bool = True
    #: the engine implements ``sample_resources`` (telemetry's resource samples)
    samples_resources: bool = False
    #: the engine says where each task ran (``TaskHandle.running(worker)`` -> ``task.worker``)
    reports_worker: bool = False

    def _need(self, executables: bool = False, functions: bool = False) -> None:
        if executables and not self.runs_executables:
            pytest.fail(f"{type(self).__name__} declares runs_executables=False; remove this test by overriding it with a reason")
        if functions and not self.runs_functions:
            pytest.fail(f"{type(self).__name__} declares runs_functions=False; remove this test by overriding it with a reason")
