"""call_function keeps each task's printed output apart: worker threads and
``async def`` tasks sharing one loop, all printing at once."""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from rhapsody.engine import call_function
from rhapsody.engine.calls import call_function_async


def chatty(i: int, barrier: threading.Barrier) -> int:
    barrier.wait(timeout=30)  # every thread prints at the same time
    for k in range(50):
        print(f"{i}:{k}")
        sys.stderr.write(f"e{i}:{k}\n")
    return i


def test_threads_printing_at_once_keep_their_own_output() -> None:
    n = 8
    barrier = threading.Barrier(n)
    with ThreadPoolExecutor(max_workers=n) as pool:
        outcomes = list(pool.map(lambda i: call_function(chatty, (i, barrier)), range(n)))
    for i, outcome in enumerate(outcomes):
        assert outcome.value == i
        assert outcome.stdout == "".join(f"{i}:{k}\n" for k in range(50))
        assert outcome.stderr == "".join(f"e{i}:{k}\n" for k in range(50))


async def interleaved(i: int) -> int:
    for k in range(20):
        print(f"a{i}:{k}")
        await asyncio.sleep(0)  # let the others print in between
    return i


def test_async_tasks_on_one_loop_keep_their_own_output() -> None:
    async def go() -> list:
        return await asyncio.gather(*(call_function_async(interleaved, (i,)) for i in range(6)))

    for i, outcome in enumerate(asyncio.run(go())):
        assert outcome.value == i and outcome.stdout == "".join(f"a{i}:{k}\n" for k in range(20))


def test_failed_function_stderr_is_its_output_then_the_traceback() -> None:
    def fails() -> None:
        print("about to fail", file=sys.stderr)
        print("some output")
        raise RuntimeError("the reason")

    outcome = call_function(fails)
    assert isinstance(outcome.error, RuntimeError) and outcome.stdout == "some output\n"
    assert outcome.stderr is not None and outcome.stderr.startswith("about to fail\nTraceback (most recent call last):")
    assert outcome.stderr.rstrip().endswith("RuntimeError: the reason")


def test_output_outside_a_task_still_reaches_the_process_stream(capsys: object) -> None:
    call_function(print, ("inside",))
    print("outside")
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "outside" in out and "inside" not in out


def shout(i: int) -> int:
    print(f"from process task {i}")
    return i


def test_process_pool_tasks_bring_their_output_back(tmp_path: object) -> None:
    from concurrent.futures import ProcessPoolExecutor

    from rhapsody import ComputeTask, Session
    from rhapsody.backends import ConcurrentExecutionBackend

    async def go() -> None:
        with ProcessPoolExecutor(max_workers=2) as pool:
            async with Session([ConcurrentExecutionBackend(pool, "procs")], work_dir=str(tmp_path)) as session:
                tasks = [ComputeTask(function=shout, args=(i,)) for i in range(6)]
                await session.submit_tasks(tasks)
                await session.wait_tasks(tasks)
                assert [t.stdout for t in tasks] == [f"from process task {i}\n" for i in range(6)]
                assert [t.return_value for t in tasks] == list(range(6))

    asyncio.run(go())
