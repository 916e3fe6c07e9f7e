"""radical.asyncflow on the default backend, the shape of rhapsody-py's asyncflow
example: three dependent function tasks per workflow, many workflows at once,
plus an executable task and a failing task."""

import asyncio

from radical.asyncflow import WorkflowEngine

from rhapsody.backends import ConcurrentExecutionBackend


async def main():
    backend = await ConcurrentExecutionBackend()
    flow = await WorkflowEngine.create(backend=backend)

    @flow.function_task
    async def generate(*args):
        print("generating")
        return sum(range(1000))

    @flow.function_task
    async def evens(*args):
        print(f"processing {args[0]}")
        return [x for x in range(1000) if x % 2 == 0]

    @flow.function_task
    async def aggregate(*args):
        total, even = args
        return {"total_sum": total, "even_count": len(even)}

    @flow.executable_task
    async def listing(*args):
        return "/bin/echo listed"

    @flow.function_task
    async def fails(*args):
        raise RuntimeError("workflow step failed")

    async def run_wf(wf_id):
        t1 = generate()
        t2 = evens(t1)
        t3 = aggregate(t1, t2)
        return await t3

    results = await asyncio.gather(*[run_wf(i) for i in range(64)])
    print(f"workflows {len(results)} same {all(r == {'total_sum': 499500, 'even_count': 500} for r in results)}")
    print(f"executable {(await listing()).strip()}")
    try:
        await fails()
    except Exception as exc:  # asyncflow raises the task's failure
        print(f"failure raised {type(exc).__name__} mentions cause {'workflow step failed' in str(exc)}")
    await flow.shutdown()
    print(f"backend after shutdown {backend.state()}")


if __name__ == "__main__":
    asyncio.run(main())
