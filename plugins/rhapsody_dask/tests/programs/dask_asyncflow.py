"""radical.asyncflow driving the Dask backend, as in rhapsody-py's asyncflow
example: three dependent function tasks per workflow, many workflows at once."""

import asyncio

from radical.asyncflow import WorkflowEngine

from rhapsody.backends import DaskExecutionBackend


async def main():
    backend = await DaskExecutionBackend({"n_workers": 2, "threads_per_worker": 1})
    flow = await WorkflowEngine.create(backend=backend)

    @flow.function_task
    async def produce(*args):
        print("producing")
        return sum(range(1000))

    @flow.function_task
    async def evens(*args):
        print(f"got sum {args[0]}")
        return [x for x in range(1000) if x % 2 == 0]

    @flow.function_task
    async def combine(*args):
        total, even = args
        return {"total_sum": total, "even_count": len(even)}

    @flow.executable_task
    async def echo(*args):
        # the command is built when the task is defined; args are its dependencies
        return "/bin/echo workflow done"

    async def workflow(i):
        t1 = produce()
        t2 = evens(t1)
        t3 = combine(t1, t2)
        out = await echo(t3)
        return await t3, out.strip()

    results = await asyncio.gather(*[workflow(i) for i in range(16)])
    await flow.shutdown()
    print(f"workflows {len(results)}")
    print(f"all equal {all(r == ({'total_sum': 499500, 'even_count': 500}, 'workflow done') for r in results)}")
    print(f"first {results[0]}")


if __name__ == "__main__":
    asyncio.run(main())
