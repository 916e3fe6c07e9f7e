"""Backends built the rhapsody-py ways: get_backend by name, the registry,
positional constructor arguments, create(), the no-op backend, callbacks
with plain dict tasks, state constants."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import rhapsody
from rhapsody import BackendRegistry, discover_backends, get_backend
from rhapsody.backends import ConcurrentExecutionBackend, NoopExecutionBackend
from rhapsody.backends.constants import StateMapper, TasksMainStates


class LabelledBackend(ConcurrentExecutionBackend):
    pass


async def main():
    available = discover_backends()
    print(f"concurrent available {bool(available['concurrent'])} noop available {bool(available['noop'])}")

    BackendRegistry.register_backend("labelled", LabelledBackend)
    print(f"registered {'labelled' in BackendRegistry.list_backends()}")
    labelled = await get_backend("labelled")
    print(f"labelled is {type(labelled).__name__} named {labelled.name}")

    pool = ThreadPoolExecutor(max_workers=2)
    positional = await ConcurrentExecutionBackend(pool, "positional")
    created = await ConcurrentExecutionBackend.create(ThreadPoolExecutor(max_workers=2))
    noop = await rhapsody.get_backend("noop")
    print(f"names {positional.name} {created.name} {noop.name} {isinstance(noop, NoopExecutionBackend)}")

    seen = []
    positional.register_callback(lambda task, state: seen.append((task["uid"], state)))
    tasks = [
        {"uid": "dict.1", "executable": "/bin/echo", "arguments": ["one"]},
        {"uid": "dict.2", "function": sum, "args": ([1, 2, 3],)},
    ]
    await positional.submit_tasks(tasks)
    mapper = positional.get_task_states_map()
    while not all(t.get("state") in mapper.terminal_states for t in tasks):
        await asyncio.sleep(0.01)
    print(f"dict results {tasks[0]['stdout'].strip()} {tasks[1]['return_value']}")
    print(f"callbacks saw DONE {sorted(uid for uid, state in seen if state == TasksMainStates.DONE.value)}")
    print(f"mapper {StateMapper('concurrent').DONE} {StateMapper(positional).to_main_state('FAILED') is TasksMainStates.FAILED}")

    many = [rhapsody.ComputeTask(function=print) for _ in range(1000)]
    async with rhapsody.Session([noop]) as session:
        await session.submit_tasks(many)
        await session.wait_tasks(many)
        print(f"noop finished {sum(t.state == 'DONE' for t in many)} value {many[0].return_value}")
    for backend in (labelled, positional, created):
        await backend.shutdown()
    pool.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
