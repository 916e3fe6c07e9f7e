"""Failures a real server (or its absence) causes, each ending the task FAILED
with the reason; and, with a mock, the overload answers a single CPU server
never gives (HTTP 429 / 503)."""

from __future__ import annotations

from typing import Any

import httpx
from serving import MODEL

from rhapsody import AITask, ComputeTask, Session, TaskState
from rhapsody.errors import BackendError
from rhapsody.testing import LoopRunner
from rhapsody.testing import tasks as fn
from rhapsody_inference import Endpoint, InferenceBackend, InferenceError
from rhapsody_inference.server import free_port


def run_tasks(run: LoopRunner, backend: InferenceBackend, *tasks: Any, tmp_path: Any) -> None:
    async def go() -> None:
        async with Session(backends=[backend], work_dir=tmp_path) as session:
            await session.submit_tasks(list(tasks))
            await session.wait_tasks(list(tasks))

    run(go())


def ai(prompt: str = "Name a colour.", **kw: Any) -> AITask:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 8)
    return AITask(prompt=prompt, **kw)


def test_unreachable_server_fails_after_retries(run: LoopRunner, tmp_path: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = InferenceBackend([Endpoint(url, chat=True)], retries=2, backoff=0.05)
    t = ai()
    run_tasks(run, backend, t, tmp_path=tmp_path)
    assert t.state is TaskState.FAILED
    exc = t.exception
    assert isinstance(exc, InferenceError) and exc.status is None and exc.url is not None and exc.url.startswith(url)
    assert "cannot reach the server" in str(exc) and "after 3 attempts" in str(exc)


def test_unknown_model_names_what_is_served(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    # llama.cpp answers under any model name; the backend checks GET /v1/models
    t, fine = ai(model="no-such-model"), ai()
    run_tasks(run, InferenceBackend([Endpoint(llama_url, chat=True)]), t, fine, tmp_path=tmp_path)
    assert t.state is TaskState.FAILED
    assert isinstance(t.exception, InferenceError) and t.exception.code == "model_not_found"
    assert "'no-such-model'" in str(t.exception) and MODEL in str(t.exception)
    assert fine.state is TaskState.DONE, fine.exception  # nothing else lost


def test_prompt_too_long_carries_the_server_message(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    long_prompt = "word " * 2000  # n_ctx is 512
    t, fine = ai(long_prompt), ai()
    run_tasks(run, InferenceBackend([Endpoint(llama_url, chat=True)]), t, fine, tmp_path=tmp_path)
    assert t.state is TaskState.FAILED
    exc = t.exception
    assert isinstance(exc, InferenceError) and exc.status == 400 and exc.code == "context_length_exceeded"
    assert "context" in str(exc).lower() and "512" in str(exc)  # the server's own words
    assert fine.state is TaskState.DONE, fine.exception


def test_compute_task_is_refused(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    t = ComputeTask(function=fn.noop)
    run_tasks(run, InferenceBackend([llama_url]), t, tmp_path=tmp_path)
    assert t.state is TaskState.FAILED and isinstance(t.exception, BackendError) and "compute" in str(t.exception)


class Overloaded(httpx.AsyncBaseTransport):
    """MOCK, for a fault the real server cannot be made to give: the first
    ``busy`` POSTs get HTTP ``status`` (429 rate-limited, 503 overloaded) with a
    Retry-After; everything else goes through to the real llama.cpp server."""

    def __init__(self, status: int, busy: int) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.status, self.busy, self.refused = status, busy, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and self.refused < self.busy:
            self.refused += 1
            body = {"error": {"message": "busy, try later", "code": "rate_limit_exceeded"}}
            return httpx.Response(self.status, json=body, headers={"Retry-After": "0.1"})
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


def test_429_and_503_are_retried_with_backoff(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    for status in (429, 503):
        transport = Overloaded(status, busy=2)
        t = ai()
        run_tasks(run, InferenceBackend([Endpoint(llama_url, chat=True)], http_transport=transport, retries=3), t, tmp_path=tmp_path)
        assert t.state is TaskState.DONE, t.exception
        assert t.metrics["requests"][0]["attempts"] == 3 and transport.refused == 2


def test_retries_run_out_with_the_status_in_the_error(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    transport = Overloaded(429, busy=10)
    t = ai()
    run_tasks(run, InferenceBackend([Endpoint(llama_url, chat=True)], http_transport=transport, retries=1), t, tmp_path=tmp_path)
    assert t.state is TaskState.FAILED
    exc = t.exception
    assert isinstance(exc, InferenceError) and exc.status == 429 and "busy, try later" in str(exc) and "after 2 attempts" in str(exc)


def test_bad_constructor_arguments_raise() -> None:
    import pytest

    with pytest.raises(ValueError, match="endpoints="):
        InferenceBackend()
    with pytest.raises(ValueError, match="http"):
        Endpoint("localhost:8000")
    with pytest.raises(ValueError, match="concurrency"):
        Endpoint("http://h:1", concurrency=0)
    with pytest.raises(ValueError, match="retries"):
        InferenceBackend(["http://h:1"], retries=-1)


def test_one_bad_prompt_in_a_list_fails_the_task_with_its_reason(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    t = AITask(prompt=["Name a colour.", "word " * 2000, "Name a fruit."], model=MODEL, max_tokens=8)
    run_tasks(run, InferenceBackend([Endpoint(llama_url, chat=True, concurrency=1)]), t, tmp_path=tmp_path)
    assert t.state is TaskState.FAILED and t.response is None
    assert isinstance(t.exception, InferenceError) and t.exception.code == "context_length_exceeded"
