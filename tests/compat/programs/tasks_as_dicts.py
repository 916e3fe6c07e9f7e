"""Tasks behave like the dicts they are upstream: dict(task), iteration,
from_dict, equality and hashing by uid, extra fields, AITask prompt lists,
awaiting tasks themselves, routing by backend name, capture_stdio files,
logging with a format string, and a warning for a misspelt field."""

import asyncio
import logging
import os
import sys

import rhapsody
from rhapsody.api import AITask, BaseTask, ComputeTask, Session
from rhapsody.backends import ConcurrentExecutionBackend, NoopExecutionBackend

rhapsody.enable_logging(logging.WARNING, format_string="LOG %(levelname)s %(name)s: %(message)s", stream=sys.stdout, force=True)


async def where():
    return os.getpid()


async def main():
    task = ComputeTask(executable="/bin/echo", arguments=["x"], name="first", tags=["a"])
    as_dict = dict(task)
    print(f"dict keys ok {all(k in as_dict for k in ('uid', 'executable', 'arguments', 'state', 'stdout', 'name', 'tags'))}")
    print(f"iteration matches {list(task) == list(as_dict)}")
    copy = BaseTask.from_dict(as_dict)
    print(f"from_dict {type(copy).__name__} equal {copy == task} same set {len({task, copy})} name {copy.name}")

    prompts = AITask(prompt=["one", "two"], backend="ai")
    print(f"ai prompts {prompts.prompt} routed to {prompts.backend}")

    ComputeTask(function=print, argumets=["lost"])  # a typo: warned about

    local = ConcurrentExecutionBackend(name="local")
    other = ConcurrentExecutionBackend(name="other")
    await asyncio.gather(local, other)
    async with Session(backends=[local, other, NoopExecutionBackend(name="ai")]) as session:
        one = ComputeTask(function=where, backend=local.name)
        two = ComputeTask(function=where, backend=other.name)
        captured = ComputeTask(executable="/bin/sh", arguments=["-c", "echo to-file; echo err-file >&2"], capture_stdio=True)
        await session.submit_tasks([one, two, captured, prompts])
        await asyncio.gather(one, two, captured)
        print(f"ran on {one.backend} {two.backend} same process {one.return_value == two.return_value == os.getpid()}")
        artifacts = os.path.join(os.getcwd(), session.uid)  # the default work dir is the current one
        with open(captured.stdout) as fh:
            print(f"capture file {captured.stdout == os.path.join(artifacts, captured.uid + '.stdout')} {fh.read().strip()}")
        with open(os.path.join(artifacts, f"{captured.uid}.stderr")) as fh:
            print(f"capture err {fh.read().strip()}")
        await session.wait_tasks([prompts])
        print(f"ai task {prompts.state}")


if __name__ == "__main__":
    asyncio.run(main())
