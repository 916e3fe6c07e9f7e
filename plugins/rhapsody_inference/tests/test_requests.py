"""Requests to a real llama.cpp server (SmolLM2-135M-Instruct) that the backend
only connects to: the chat/completions rule, metrics, concurrency bounds, load
balancing, cancellation that aborts the HTTP request, and the errors a real
server gives. Shapes are asserted, never the model's text."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from serving import MODEL, connections_to

from rhapsody import AITask, Session, TaskState
from rhapsody.testing import LoopRunner
from rhapsody.testing.waiting import wait_for_state
from rhapsody_inference import Endpoint, InferenceBackend, InferenceError


def run_tasks(run: LoopRunner, backend: InferenceBackend, *tasks: AITask, tmp_path: Any = None) -> list[AITask]:
    async def go() -> list[AITask]:
        async with Session(backends=[backend], work_dir=tmp_path) as session:
            await session.submit_tasks(list(tasks))
            await session.wait_tasks(list(tasks))
        return list(tasks)

    return run(go())  # type: ignore[no-any-return]


def ai(prompt: str | list[str] = "Name a colour.", **kw: Any) -> AITask:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 8)
    return AITask(prompt=prompt, **kw)


@pytest.fixture
def chat_backend(llama_url: str) -> Callable[..., InferenceBackend]:
    def make(**kw: Any) -> InferenceBackend:
        return InferenceBackend([Endpoint(llama_url, chat=True, concurrency=kw.pop("concurrency", 2))], **kw)

    return make


# ---------------------------------------------------------------- answers and the api rule
def test_chat_answer_with_usage_and_timings(run: LoopRunner, chat_backend: Any, tmp_path: Any) -> None:
    (t,) = run_tasks(run, chat_backend(), ai(max_tokens=12), tmp_path=tmp_path)
    assert t.state is TaskState.DONE, t.exception
    assert isinstance(t.response, list) and len(t.response) == 1 and t.response[0].strip()
    m = t.metrics
    (req,) = m["requests"]
    assert req["api"] == "chat"
    assert 0 < m["completion_tokens"] <= 12
    assert 0 < m["time_to_first_token_s"] <= req["latency_s"] <= m["latency_s"]
    assert req["finish_reason"] in ("stop", "length")
    assert req["attempts"] == 1


def test_plain_prompt_on_a_completion_endpoint_uses_completions(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    backend = InferenceBackend([Endpoint(llama_url)])  # not declared a chat model
    plain, with_system = ai("The sky is"), ai("The sky is", system_prompt="Be brief.")
    run_tasks(run, backend, plain, with_system, tmp_path=tmp_path)
    assert plain.state is TaskState.DONE and with_system.state is TaskState.DONE, (plain.exception, with_system.exception)
    assert plain.metrics["requests"][0]["api"] == "completions"
    assert with_system.metrics["requests"][0]["api"] == "chat"  # a system prompt always means chat


def test_api_key_overrides_the_rule(run: LoopRunner, chat_backend: Any, tmp_path: Any) -> None:
    t = ai("Once upon a time", task_backend_specific_kwargs={"api": "completions"})
    run_tasks(run, chat_backend(), t, tmp_path=tmp_path)
    assert t.state is TaskState.DONE, t.exception
    assert t.metrics["requests"][0]["api"] == "completions"


def test_without_streaming_the_server_counts_tokens(run: LoopRunner, chat_backend: Any, tmp_path: Any) -> None:
    (t,) = run_tasks(run, chat_backend(stream=False), ai(max_tokens=6), tmp_path=tmp_path)
    assert t.state is TaskState.DONE, t.exception
    m = t.metrics
    assert m["prompt_tokens"] > 0 and 0 < m["completion_tokens"] <= 6
    assert m["total_tokens"] == m["prompt_tokens"] + m["completion_tokens"]
    assert m["time_to_first_token_s"] is None  # only a stream shows the first token


def test_list_of_prompts_is_one_task_with_a_list_of_responses(run: LoopRunner, chat_backend: Any, tmp_path: Any) -> None:
    prompts = ["Name a fruit.", "Name a city.", "Name an animal."]
    (t,) = run_tasks(run, chat_backend(), ai(prompts, max_tokens=6), tmp_path=tmp_path)
    assert t.state is TaskState.DONE, t.exception
    assert isinstance(t.response, list) and len(t.response) == 3 and all(isinstance(r, str) for r in t.response)
    assert len(t.metrics["requests"]) == 3
    assert t.metrics["completion_tokens"] == sum(r["completion_tokens"] for r in t.metrics["requests"])


def test_bad_option_values_fail_the_task(run: LoopRunner, chat_backend: Any, tmp_path: Any) -> None:
    bad_api = ai(task_backend_specific_kwargs={"api": "embeddings"})
    bad_stream = ai(task_backend_specific_kwargs={"stream": "yes"})
    good = ai(task_backend_specific_kwargs={"extra_body": {"seed": 7}})
    run_tasks(run, chat_backend(), bad_api, bad_stream, good, tmp_path=tmp_path)
    assert bad_api.state is TaskState.FAILED and "'api'" in str(bad_api.exception)
    assert bad_stream.state is TaskState.FAILED and "'stream'" in str(bad_stream.exception)
    assert good.state is TaskState.DONE, good.exception


# ---------------------------------------------------------------- concurrency and balancing
def overlaps(requests: list[dict[str, Any]]) -> int:
    """The most requests in flight at one instant."""
    events = sorted([(r["started_at"], 1) for r in requests] + [(r["ended_at"], -1) for r in requests], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_concurrency_per_endpoint_is_bounded(run: LoopRunner, chat_backend: Any, tmp_path: Any) -> None:
    tasks = [ai(f"Say {i}.", max_tokens=4) for i in range(4)]
    run_tasks(run, chat_backend(concurrency=1), *tasks, tmp_path=tmp_path)
    assert all(t.state is TaskState.DONE for t in tasks), [t.exception for t in tasks]
    assert overlaps([t.metrics["requests"][0] for t in tasks]) == 1


def test_requests_spread_over_endpoints(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    # the same real server under two names: two endpoints to the backend
    port = urlsplit(llama_url).port
    endpoints = [Endpoint(llama_url, chat=True, concurrency=1), Endpoint(f"http://localhost:{port}", chat=True, concurrency=1)]
    backend = InferenceBackend(endpoints)
    tasks = [ai(f"Say {i}.", max_tokens=4) for i in range(6)]
    run_tasks(run, backend, *tasks, tmp_path=tmp_path)
    assert all(t.state is TaskState.DONE for t in tasks), [t.exception for t in tasks]
    used = [t.metrics["requests"][0]["endpoint"] for t in tasks]
    assert used.count(endpoints[0].url) == 3 and used.count(endpoints[1].url) == 3
    assert [t.worker for t in tasks] == used  # where each ran: the endpoint that answered
    assert overlaps([t.metrics["requests"][0] for t in tasks]) == 2


def test_inference_endpoint_names_the_server(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    port = urlsplit(llama_url).port
    other = f"http://localhost:{port}/v1"
    backend = InferenceBackend([Endpoint(llama_url, chat=True)])
    t = ai(inference_endpoint=other)  # not one of the backend's endpoints: used as given
    run_tasks(run, backend, t, tmp_path=tmp_path)
    assert t.state is TaskState.DONE, t.exception
    assert t.metrics["endpoints"] == [other]


# ---------------------------------------------------------------- cancellation, timeouts
def test_cancel_aborts_the_http_request(run: LoopRunner, llama_url: str, tmp_path: Any) -> None:
    port = urlsplit(llama_url).port
    assert port is not None
    backend = InferenceBackend([Endpoint(llama_url, chat=True, concurrency=1)])
    t = ai("Write a very long story about a lighthouse keeper.", max_tokens=400)

    async def go() -> None:
        async with Session(backends=[backend], work_dir=tmp_path) as session:
            await session.submit_tasks([t])
            await wait_for_state(t, TaskState.RUNNING, timeout=120)
            await _until(lambda: connections_to(port) == 1, "the request's connection to open")
            assert await session.cancel_tasks([t]) == [True]
            await _until(lambda: connections_to(port) == 0, "the request's connection to close after cancel")

    run(go())
    assert t.state is TaskState.CANCELED and t.response is None


def test_request_timeout_fails_with_the_seconds(run: LoopRunner, chat_backend: Any, tmp_path: Any) -> None:
    t = ai("Write a very long story about a river.", max_tokens=400)
    run_tasks(run, chat_backend(request_timeout=0.3, retries=0), t, tmp_path=tmp_path)
    assert t.state is TaskState.FAILED
    assert isinstance(t.exception, InferenceError) and "within 0.3 s" in str(t.exception)


async def _until(check: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        await asyncio.sleep(0.05)
