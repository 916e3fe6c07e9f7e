"""rhapsody-py 0.6's DaskExecutionBackend call shapes: positional
(resources, name, cluster, client), keyword, and the create() factory; an
existing cluster and an asynchronous client stay the caller's."""

import asyncio

from dask.distributed import Client, LocalCluster

from rhapsody.api import ComputeTask, Session
from rhapsody.backends import DaskExecutionBackend


def add(a, b):
    return a + b


async def run_one(backend, a, b):
    task = ComputeTask(function=add, args=(a, b), backend=backend.name)
    session = Session(backends=[backend])
    async with session:
        futures = await session.submit_tasks([task])
        await asyncio.gather(*futures)
    return task.return_value


async def main():
    own = await DaskExecutionBackend({"n_workers": 1, "threads_per_worker": 1}, "own_cluster")
    print(f"positional resources+name {own.name} {await run_one(own, 1, 2)}")

    made = await DaskExecutionBackend.create({"n_workers": 1, "threads_per_worker": 1}, "made")
    print(f"create positional {made.name} {await run_one(made, 2, 3)}")

    # scratch space in the working directory: Dask's default, /tmp/dask-scratch-space, outlives the cluster
    scratch = "dask-scratch"
    async with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
        local_directory=scratch,
        scheduler_kwargs={"local_directory": scratch},
        asynchronous=True,
    ) as cluster:
        on_cluster = await DaskExecutionBackend(None, "on_cluster", cluster)
        print(f"positional cluster {on_cluster.name} {await run_one(on_cluster, 3, 4)}")

        client = await Client(cluster, asynchronous=True)
        with_client = await DaskExecutionBackend.create(name="with_client", client=client)
        print(f"create client {with_client.name} {await run_one(with_client, 4, 5)}")
        print(f"client still open {client.status}")
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
