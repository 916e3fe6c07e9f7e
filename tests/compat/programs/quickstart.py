"""The getting-started shape: executables and functions on the concurrent backend,
results read from the tasks, function output printed from task.stdout."""

import asyncio
import sys

from rhapsody.api import ComputeTask, Session
from rhapsody.backends import ConcurrentExecutionBackend


def square(x):
    print(f"squaring {x}")
    return x * x


async def greet(who):
    await asyncio.sleep(0.01)
    print(f"hello {who}")
    print(f"warned {who}", file=sys.stderr)
    return f"greeted {who}"


async def main():
    backend = await ConcurrentExecutionBackend()
    session = Session([backend])
    tasks = [
        ComputeTask(executable="/bin/echo", arguments=["from", "echo"], name="echoer"),
        ComputeTask(executable="/bin/bash", arguments=["-c", "echo $((6 * 7))"]),
        ComputeTask(function=square, args=(9,)),
        ComputeTask(function=greet, kwargs={"who": "world"}),
    ] + [ComputeTask(function=square, args=(i,)) for i in range(20)]
    async with session:
        futures = await session.submit_tasks(tasks)
        print(f"submitted {len(futures)}")
        done = await asyncio.gather(*futures)
        print(f"gathered {len(done)} same={all(a is b for a, b in zip(done, tasks, strict=True))}")
        for task in tasks[:4]:
            print(f"{task['uid'] == task.uid} {task.state} out={task.stdout.strip()!r} value={task.return_value!r}")
        print(f"greet stderr={tasks[3].stderr.strip()!r}")
        print(f"name={tasks[0].name} item={tasks[0]['name']} routed to {tasks[0].backend}")
        squares = [t.stdout for t in tasks[4:]]
        print(f"own output {squares == [f'squaring {i}' + chr(10) for i in range(20)]}")


if __name__ == "__main__":
    asyncio.run(main())
