"""Failures the upstream way: gather over the futures fails fast with the task's
own exception, a non-zero exit is a TaskExecutionError, wait_tasks never raises
for a task's failure, and a failure nobody awaits prints no asyncio warning."""

import asyncio
import gc

from rhapsody.api import ComputeTask, Session
from rhapsody.api.errors import TaskExecutionError
from rhapsody.backends import ConcurrentExecutionBackend


class Broken(Exception):
    pass


def explode():
    raise Broken("it broke")


async def main():
    async with Session([await ConcurrentExecutionBackend()]) as session:
        futures = await session.submit_tasks([ComputeTask(function=pow, args=(2, 5)), ComputeTask(function=explode)])
        try:
            await asyncio.gather(*futures)
        except Broken as exc:
            print(f"gather raised Broken: {exc}")

        failing = ComputeTask(executable="/bin/sh", arguments=["-c", "echo nope >&2; exit 3"])
        futures = await session.submit_tasks([failing])
        try:
            await futures[0]
        except TaskExecutionError as exc:
            print(f"exit error uid_ok={exc.task_uid == failing.uid} code={exc.exit_code}")

        ignored = ComputeTask(function=explode)  # nobody awaits this one
        await session.submit_tasks([ignored])
        tasks = [ignored, ComputeTask(executable="/bin/false")]
        await session.submit_tasks(tasks[1:])
        waited = await session.wait_tasks(tasks)
        print(f"wait_tasks returned {[t.state for t in waited]}")
        print(f"failed stderr has traceback {'Traceback' in ignored.stderr and 'it broke' in ignored.stderr}")

        slow = ComputeTask(executable="/bin/sleep", arguments=["30"])
        await session.submit_tasks([slow])
        try:
            await session.wait_tasks([slow], timeout=0.2)
        except asyncio.TimeoutError:
            print("wait timed out with asyncio.TimeoutError")
        await session.cancel_tasks([slow])
    del futures, tasks, waited, ignored
    gc.collect()


if __name__ == "__main__":
    asyncio.run(main())
