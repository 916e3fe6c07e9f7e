# A RHAPSODY program in rhapsody-py 0.6's style for DragonExecutionBackend:
# batch_kwargs, .create(...), dict tasks,
# the per-task Batch timeout, wait() as a fence, and a DDict on the runtime.
import asyncio
import multiprocessing as mp

import dragon  # noqa: F401  (the "dragon" start method needs it)

from rhapsody.api import ComputeTask, Session
from rhapsody.backends import DragonExecutionBackend


def square(x):
    print(f"squaring {x}")
    return x * x


def slow():
    import time

    time.sleep(60)


async def main():
    mp.set_start_method("dragon", force=True)
    backend = await DragonExecutionBackend.create(batch_kwargs={"results_ddict_mem": 64 << 20, "disable_telem": True})
    session = Session(backends=[backend])

    tasks = [{"uid": f"sq.{i}", "function": square, "args": [i]} for i in range(4)]
    tasks.append({"uid": "echo", "executable": "/bin/echo", "arguments": ["from", "dragon"]})
    await session.submit_tasks(tasks)
    backend.wait()
    done = await session.wait_tasks(tasks)
    for task in done:
        print(task["uid"], task["state"], task.get("return_value"), (task.get("stdout") or "").strip())

    timed = ComputeTask(function=slow, task_backend_specific_kwargs={"timeout": 2})
    (future,) = await session.submit_tasks([timed])
    try:
        await future
    except Exception as exc:
        print("timed out with", type(exc).__name__)

    store = backend.create_ddict(1, 1, 4 << 20)
    store["answer"] = sum(t["return_value"] for t in done if t["uid"].startswith("sq."))
    print("ddict", store["answer"])
    store.destroy()

    from dragon.native.machine import Node, System

    capacity = backend.capacity()
    print("gpus", capacity.gpus, "dragon sees", sum(Node(h).num_gpus for h in System().nodes))
    await session.close()


if __name__ == "__main__":
    asyncio.run(main())
