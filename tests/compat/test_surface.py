"""rhapsody-py 0.6's public names and call shapes, on RHAPSODY's own objects."""

from __future__ import annotations

import asyncio
import io
import logging
import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import rhapsody
from rhapsody import ComputeTask, Session, TaskState
from rhapsody.backends import ConcurrentExecutionBackend, NoopExecutionBackend
from rhapsody.backends.constants import StateMapper, TasksMainStates


def test_api_modules_are_rhapsodys_own_names() -> None:
    from rhapsody import api
    from rhapsody.api import errors, session, task

    assert api.Session is session.Session is rhapsody.Session
    assert (
        (api.ComputeTask, api.AITask, api.BaseTask)
        == (task.ComputeTask, task.AITask, task.BaseTask)
        == (
            rhapsody.ComputeTask,
            rhapsody.AITask,
            rhapsody.BaseTask,
        )
    )
    for name in ("RhapsodyError", "BackendError", "TaskValidationError", "TaskExecutionError", "SessionError", "ResourceError"):
        assert getattr(api, name) is getattr(errors, name) is getattr(rhapsody, name)
    from rhapsody.backends import Session as BackendsSession
    from rhapsody.backends.discovery import BackendRegistry, get_backend
    from rhapsody.backends.execution import ConcurrentExecutionBackend as FromPackage
    from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend as FromModule
    from rhapsody.backends.execution.noop import NoopExecutionBackend as Noop
    from rhapsody.logger import enable_logging

    assert BackendsSession is Session and BackendRegistry is rhapsody.BackendRegistry and enable_logging is rhapsody.enable_logging
    assert FromPackage is FromModule is ConcurrentExecutionBackend and Noop is NoopExecutionBackend
    assert get_backend is rhapsody.get_backend


def test_error_constructors_take_both_shapes_and_pickle() -> None:
    e = rhapsody.TaskValidationError("t1", "uid must be a non-empty string")
    assert e.task_uid == "t1" and "uid must be" in e.message and e.field == "<task>"
    assert rhapsody.TaskValidationError("t1", "prompt", "empty").field == "prompt"
    b = rhapsody.BackendError("dask", "lost the scheduler")
    assert b.backend_name == "dask" and "lost the scheduler" in str(b)
    assert rhapsody.BackendError("plain message").backend_name is None
    r = rhapsody.ResourceError("t2", "gpus", "needs 4")
    assert (r.task_uid, r.resource_type) == ("t2", "gpus") and "needs 4" in str(r)
    x = rhapsody.TaskExecutionError("t3", "bad", 2)
    assert (x.task_uid, x.exit_code) == ("t3", 2)
    for err in (e, b, r, x):
        assert str(pickle.loads(pickle.dumps(err))) == str(err)
    assert issubclass(rhapsody.SessionError, rhapsody.RhapsodyError)
    assert issubclass(rhapsody.BackendNotFoundError, ValueError), "rhapsody-py raises ValueError for an unknown backend"


def test_states_compare_as_plain_strings_and_through_the_mapper() -> None:
    assert TaskState.DONE == "DONE" == TasksMainStates.DONE and repr(TaskState.FAILED) == "'FAILED'"
    StateMapper.register_backend_tasks_states("slurmish", "COMPLETED", "ERR", "KILLED", "R")
    mapper = StateMapper("slurmish")
    assert mapper.DONE == "COMPLETED" and mapper.to_main_state("ERR") is TasksMainStates.FAILED
    assert mapper.terminal_states == ("COMPLETED", "ERR", "KILLED")
    with pytest.raises(ValueError):
        mapper.to_main_state("NOPE")
    with pytest.raises(KeyError):
        TasksMainStates["PENDING"]
    assert StateMapper(ConcurrentExecutionBackend()).get_backend_state("CANCELED") == "CANCELED"


def test_registry_runtime_registration_and_get_backend_shapes() -> None:
    from rhapsody import BackendRegistry, get_backend

    class Mine(ConcurrentExecutionBackend):
        pass

    BackendRegistry.register_backend("mine", Mine)
    BackendRegistry.register_backend("mine_by_path", "rhapsody.execution.noop.NoopExecutionBackend")
    try:
        assert {"mine", "mine_by_path", "concurrent", "noop"} <= set(BackendRegistry.list_backends())
        assert isinstance(get_backend("mine"), Mine) and get_backend("mine").name == "mine"
        assert isinstance(get_backend("mine_by_path"), NoopExecutionBackend)
        pool = ThreadPoolExecutor(max_workers=1)
        positional = get_backend("concurrent", pool)  # rhapsody-py passes positional arguments through
        assert positional.executor is pool and positional.name == "concurrent"
        pool.shutdown()
        from rhapsody.backends import discover_backends

        assert discover_backends()["mine"] is True and discover_backends()["concurrent"] is True
        with pytest.raises(ValueError, match="no_such_backend"):
            get_backend("no_such_backend")
    finally:
        BackendRegistry.unregister_backend("mine")
        BackendRegistry.unregister_backend("mine_by_path")


def test_concurrent_constructor_shapes() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        for backend in (
            ConcurrentExecutionBackend(pool, "a"),
            ConcurrentExecutionBackend("a", pool),
            ConcurrentExecutionBackend(executor=pool, name="a"),
            ConcurrentExecutionBackend(pool, name="a"),
        ):
            assert backend.name == "a"
        assert ConcurrentExecutionBackend(pool).name == "concurrent"
        for bad in ((pool, pool), ("a", "b"), (3,)):
            with pytest.raises(TypeError):
                ConcurrentExecutionBackend(*bad)  # type: ignore[arg-type]
    finally:
        pool.shutdown()


def test_create_and_noop(tmp_path: object) -> None:
    async def go() -> None:
        backend = await NoopExecutionBackend.create(name="fast")
        async with Session([backend], work_dir=str(tmp_path)) as session:
            tasks = [ComputeTask(executable="/no/such/program") for _ in range(50)]
            futures = await session.submit_tasks(tasks)
            done = await asyncio.gather(*futures)
            assert [t.state for t in done] == ["DONE"] * 50 and done[0].exit_code == 0 and done[0].return_value is True

    asyncio.run(go())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("rhapsody")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_enable_logging_takes_rhapsody_py_arguments(restore_logging: None) -> None:
    stream = io.StringIO()
    rhapsody.enable_logging(logging.WARNING, format_string="X %(levelname)s %(message)s", stream=stream, force=True)
    rhapsody.enable_logging(logging.DEBUG, stream=io.StringIO(), force=False)  # keeps the first setting
    ComputeTask(function=print, fucntion=print)
    assert stream.getvalue().startswith("X WARNING task.unknown_field") and "did_you_mean=function" in stream.getvalue()
    root = logging.getLogger()
    assert not any(getattr(h, "stream", None) is stream for h in root.handlers), "the application's root logger is left alone"
