# A RHAPSODY program written the way rhapsody-py 0.6's docs write Dragon V3
# programs: native functions, single-process and job templates for executables
# AND functions, futures gathered. Runs under the `dragon` launcher, unchanged.
import asyncio
import logging
import os

import rhapsody
from rhapsody.api import ComputeTask, Session
from rhapsody.backends import DragonExecutionBackendV3

rhapsody.enable_logging(level=logging.WARNING)


async def main():
    backend = await DragonExecutionBackendV3()
    session = Session(backends=[backend])

    async def native_function(x):
        return x * 2

    def in_own_process():
        return os.getpid(), os.environ.get("STAGE")

    async def job_function():
        return os.environ.get("STAGE")

    tasks = [
        ComputeTask(function=native_function, args=(21,)),
        ComputeTask(
            executable="/bin/bash",
            arguments=["-c", "echo single $STAGE"],
            task_backend_specific_kwargs={"process_template": {"env": {"STAGE": "exe"}}},
        ),
        ComputeTask(
            executable="/bin/bash",
            arguments=["-c", "echo job"],
            task_backend_specific_kwargs={"process_templates": [(1, {})]},
        ),
        ComputeTask(
            function=in_own_process,
            task_backend_specific_kwargs={"process_template": {"env": {"STAGE": "fn"}}},
        ),
        ComputeTask(
            function=job_function,
            task_backend_specific_kwargs={"process_templates": [(1, {"env": {"STAGE": "fnjob"}})]},
        ),
    ]

    async with session:
        futures = await session.submit_tasks(tasks)
        print(f"Submitted {len(tasks)} tasks. Received {len(futures)} futures.")
        await asyncio.gather(*futures)
        for t in tasks:
            print(f"{t.state} {t.stdout.strip() if t.stdout else t.return_value!r}".replace(str(os.getpid()), "CLIENT"))

        # 2+2 ranks: more than this 2-vCPU node's one Batch worker can place
        big = ComputeTask(
            executable="/bin/bash",
            arguments=["-c", "echo $HOSTNAME"],
            task_backend_specific_kwargs={"process_templates": [(2, {}), (2, {})]},
        )
        (future,) = await session.submit_tasks([big])
        try:
            await future
            print("big job ran")
        except Exception as exc:
            print(f"big job {type(exc).__name__}")


if __name__ == "__main__":
    asyncio.run(main())
