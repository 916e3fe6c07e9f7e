"""Conformance for backends that run `AITask`s (``task_kinds`` containing "ai").

The compute suite (`BackendConformance`) does not apply to them: they run no
functions or executables. These checks pin what every AI backend must show
against its real model server: answers in ``response`` (one per prompt, in
order), ``metrics`` filled, compute tasks and unknown keys refused, cancel and
timeout of a request in flight, shutdown, dict descriptions. Assert shapes,
never a model's exact text.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from rhapsody.errors import BackendError, BackendNotFoundError, TaskCanceledError, TaskTimeoutError, TaskValidationError
from rhapsody.session import Session
from rhapsody.states import TaskState
from rhapsody.task import AITask, BaseTask, ComputeTask
from rhapsody.testing import tasks as fn
from rhapsody.testing.base import SessionFixtures
from rhapsody.testing.waiting import LoopRunner, await_task, wait_for_state


class AIBackendConformance(SessionFixtures):
    """Subclass, override `make_backend` (an unstarted backend) and set `model`
    to a model its server serves."""

    #: the model tasks ask for
    model: str | None = None
    #: ``max_tokens`` of the short requests (keep CPU-served tests quick)
    short_tokens: int = 8
    #: ``max_tokens`` of a request long enough to cancel while it runs
    long_tokens: int = 400
    #: seconds a single test step may take before it counts as a hang
    deadline: float = 300.0
    #: seconds a request may take to be RUNNING on a loaded server
    start_timeout: float = 120.0
    #: the engine says where each task ran (``task.worker``: e.g. the endpoint that answered)
    reports_worker: bool = False
    work_dir_prefix = "ai-conformance"

    def ai(self, prompt: str | list[str], **kw: Any) -> AITask:
        kw.setdefault("max_tokens", self.short_tokens)
        return AITask(prompt=prompt, model=self.model, **kw)

    # ------------------------------------------------------------------ answers
    def test_one_prompt_one_text(self, submit: Any) -> None:
        (t,) = submit(self.ai("Name a colour."))
        assert t.state is TaskState.DONE, t.exception
        assert isinstance(t.response, list) and len(t.response) == 1 and t.response[0].strip()
        assert isinstance(t.metrics, dict)
        assert t.metrics["latency_s"] > 0
        if self.reports_worker:
            assert isinstance(t.worker, str) and t.worker.strip(), t.worker
        else:
            assert t.worker is None, f"declared reports_worker=False but said {t.worker!r}"

    def test_list_of_prompts_list_of_texts_in_order(self, submit: Any) -> None:
        prompts = ["Say one word.", "Name a fruit.", "Count to two."]
        (t,) = submit(self.ai(prompts))
        assert t.state is TaskState.DONE, t.exception
        assert isinstance(t.response, list) and len(t.response) == len(prompts)
        assert all(isinstance(r, str) for r in t.response)

    def test_system_prompt_and_sampling_fields(self, submit: Any) -> None:
        (t,) = submit(self.ai("Hello", system_prompt="Answer briefly.", temperature=0.2, top_p=0.9, top_k=20, stop_sequences=["\n\n"]))
        assert t.state is TaskState.DONE, t.exception
        assert isinstance(t.response, list) and isinstance(t.response[0], str)

    def test_many_tasks_at_once(self, submit: Any) -> None:
        batch = [self.ai(f"Say the number {i}.", max_tokens=4) for i in range(6)]
        submit(*batch)
        assert all(t.state is TaskState.DONE for t in batch), [(t.state, t.exception) for t in batch]

    # ------------------------------------------------------------------ refusals
    def test_compute_task_fails_naming_the_kind(self, submit: Any) -> None:
        (t,) = submit(ComputeTask(function=fn.noop))
        assert t.state is TaskState.FAILED
        assert isinstance(t.exception, BackendError) and "compute" in str(t.exception)

    def test_unknown_key_fails_naming_it(self, submit: Any) -> None:
        (t,) = submit(self.ai("Hi", task_backend_specific_kwargs={"no_such_key": 1}))
        assert t.state is TaskState.FAILED
        assert isinstance(t.exception, TaskValidationError) and "no_such_key" in str(t.exception)

    def test_unknown_backend_submits_nothing(self, run: LoopRunner, session: Session) -> None:
        ok, lost = self.ai("Hi"), self.ai("Hi", backend="no-such-backend")
        with pytest.raises(BackendNotFoundError, match="no-such-backend"):
            run(session.submit_tasks([ok, lost]))
        assert ok.state is TaskState.NEW and lost.state is TaskState.NEW

    def test_resubmission_is_refused(self, run: LoopRunner, submit: Any, session: Session) -> None:
        (t,) = submit(self.ai("Hi"))
        with pytest.raises(TaskValidationError, match="already submitted"):
            run(session.submit_tasks([t]))

    def test_dict_descriptions_get_the_response(self, run: LoopRunner, session: Session) -> None:
        desc: dict[str, Any] = {"uid": f"ai-dict-{os.getpid()}-{time.monotonic_ns()}", "prompt": "Hi", "model": self.model, "max_tokens": 4}

        async def go() -> BaseTask:
            (fut,) = await session.submit_tasks([desc])
            return await fut

        t = run(go())
        assert t.state is TaskState.DONE, t.exception
        assert desc["state"] == "DONE" and isinstance(desc["response"], list) and isinstance(desc["metrics"], dict)

    # ------------------------------------------------------------------ cancel, timeout, shutdown
    def test_cancel_running_request(self, run: LoopRunner, session: Session) -> None:
        t = self.ai("Write a long story about the sea.", max_tokens=self.long_tokens)

        async def go() -> None:
            await session.submit_tasks([t])
            await wait_for_state(t, TaskState.RUNNING, timeout=self.start_timeout)
            assert await session.cancel_tasks([t]) == [True]
            with pytest.raises(TaskCanceledError):
                await t

        run(go())
        assert t.state is TaskState.CANCELED and t.response is None

    def test_timeout_fails_the_task(self, submit: Any) -> None:
        (t,) = submit(self.ai("Write a long story about mountains.", max_tokens=self.long_tokens, timeout=0.5))
        assert t.state is TaskState.FAILED
        assert isinstance(t.exception, TaskTimeoutError)

    def test_shutdown_cancels_requests_in_flight(self, run: LoopRunner, tmp_path: Path) -> None:
        backend = self.make_backend()
        tasks = [self.ai(f"Tell a long tale number {i}.", max_tokens=self.long_tokens) for i in range(3)]

        async def go() -> None:
            session = Session(backends=[backend], work_dir=tmp_path)
            await session.submit_tasks(tasks)
            await wait_for_state(tasks[0], TaskState.RUNNING, timeout=self.start_timeout)
            await session.close()

        run(go())
        assert all(t.state is TaskState.CANCELED for t in tasks), [t.state for t in tasks]
        assert backend.state() == "STOPPED"
        for t in tasks:
            with pytest.raises(TaskCanceledError):
                run(await_task(t))
