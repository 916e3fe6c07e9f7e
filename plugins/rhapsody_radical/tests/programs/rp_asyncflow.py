"""radical.asyncflow driving the RADICAL-Pilot backend (create() factory, raptor
for the function tasks): dependent tasks in several workflows at once."""

import asyncio

from radical.asyncflow import WorkflowEngine

from rhapsody.backends import RadicalExecutionBackend


async def main():
    backend = await RadicalExecutionBackend.create(
        {"resource": "local.localhost", "runtime": 15, "cores": 4},
        {"masters": [{"workers": [{"ranks": 1}]}]},
    )
    flow = await WorkflowEngine.create(backend=backend)

    @flow.function_task
    async def numbers(*args):
        return list(range(10))

    @flow.function_task
    async def total(*args):
        print(f"summing {len(args[0])}")
        return sum(args[0])

    @flow.executable_task
    async def report(*args):
        return "/bin/echo reported"

    async def workflow(i):
        nums = numbers()
        result = await total(nums)
        out = await report(nums)
        return result, out.strip()

    results = await asyncio.gather(*[workflow(i) for i in range(4)])
    await flow.shutdown()
    print(f"results {results}")


if __name__ == "__main__":
    asyncio.run(main())
