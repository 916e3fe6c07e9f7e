"""A journaled workload for kill-and-resume tests, run as a program:

    python -m rhapsody.testing.resume_driver BACKEND JOURNAL MARKER_DIR RESULTS [N]

``N`` tasks (default 2000) on the backend named ``BACKEND``: function tasks
identified by their description's hash (no uid), and every 100th an
executable with a uid of its own. Each task appends the run id
(``$RHAPSODY_TEST_RUN``) to ``MARKER_DIR/<i>``. At the end the results
(state, return value, stdout, exit code per task, in order) and how many
tasks the journal restored go to ``RESULTS`` as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from rhapsody.backends import get_backend
from rhapsody.session import Session
from rhapsody.task import BaseTask, ComputeTask
from rhapsody.testing.tasks import journal_work

#: keyword arguments of each backend the driver knows
BACKEND_OPTIONS: dict[str, dict[str, Any]] = {
    "concurrent": {"cores": 4},
    "dask": {"resources": {"n_workers": 2, "threads_per_worker": 2}},
}


def build_tasks(n: int, marker_dir: str) -> list[BaseTask]:
    tasks: list[BaseTask] = []
    for i in range(n):
        if i % 100 == 99:
            script = f'echo "$RHAPSODY_TEST_RUN" >> {marker_dir}/{i}; echo "executable {i}"'
            tasks.append(ComputeTask(executable="/bin/sh", arguments=["-c", script], uid=f"exe-{i}"))
        else:
            tasks.append(ComputeTask(function=journal_work, args=(i, marker_dir)))
    return tasks


async def main(backend: str, journal: str, marker_dir: str, results: str, n: int) -> None:
    tasks = build_tasks(n, marker_dir)
    async with Session(backends=[get_backend(backend, **BACKEND_OPTIONS[backend])], journal=journal) as session:
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        assert session.journal is not None
        restored = session.journal.restored
    rows = [[t.state.value, t.return_value, t.stdout, t.exit_code] for t in tasks]
    with open(results, "w") as fh:
        json.dump({"restored": restored, "tasks": rows}, fh)


if __name__ == "__main__":
    backend, journal, marker_dir, results = sys.argv[1:5]
    asyncio.run(main(backend, journal, marker_dir, results, int(sys.argv[5]) if len(sys.argv) > 5 else 2000))
