"""The engine: each AITask becomes one asyncio task on the backend's loop that
sends one request per prompt to a chosen endpoint and reports the answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from rhapsody.errors import BackendError, TaskValidationError
from rhapsody.task import AITask
from rhapsody_inference.client import Reply, RetryPolicy, Sender
from rhapsody_inference.endpoints import Balancer, Endpoint, EndpointState
from rhapsody_inference.errors import InferenceError
from rhapsody_inference.metrics import task_metrics
from rhapsody_inference.protocol import CHAT, COMPLETIONS, choose_api, request_body
from rhapsody_inference.routing import Router
from rhapsody_inference.server import ManagedServer

if TYPE_CHECKING:
    from rhapsody.engine.contract import EngineContext
    from rhapsody.engine.handle import TaskHandle


class InferenceEngine:
    engine_name = "inference"
    task_kinds = frozenset({"ai"})
    #: ``api``: "chat" / "completions" (overrides the rule); ``stream``: bool;
    #: ``extra_body``: dict merged into the request (``seed``, ``repeat_penalty``, ...)
    accepted_keys = frozenset({"api", "stream", "extra_body"})

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        servers: Sequence[ManagedServer],
        *,
        request_timeout: float,
        connect_timeout: float,
        retry: RetryPolicy,
        max_tokens: int,
        stream: bool,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.transport = transport
        self.endpoints, self.servers = list(endpoints), list(servers)
        self.request_timeout, self.connect_timeout = request_timeout, connect_timeout
        self.sender = Sender(timeout=request_timeout, retry=retry)
        self.max_tokens, self.stream = max_tokens, stream
        self.balancer = Balancer()
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self.router: Router | None = None
        self.by_url: dict[str, ManagedServer] = {}
        self.start_timeout = max((s.ready_timeout for s in self.servers), default=0.0) + 60.0
        self.log: Any = None

    def capacity(self) -> None:
        return None  # a request asks the server for nothing the backend can count

    # ------------------------------------------------------------------ lifecycle
    async def start(self, context: EngineContext) -> None:
        self.log = self.sender.log = context.log
        await asyncio.gather(*(server.start(context.work_dir / "servers", self.log) for server in self.servers))
        self.by_url = {server.url: server for server in self.servers}
        endpoints = [*self.endpoints, *(server.endpoint() for server in self.servers)]
        self.router = Router(
            endpoints, timeout=self.request_timeout, connect_timeout=self.connect_timeout, backend=context.name, transport=self.transport
        )
        await self.router.refresh_models(self.router.states, self.log)

    async def stop(self) -> None:
        jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        if self.router is not None:
            await self.router.close()
        await asyncio.gather(*(server.stop() for server in self.servers), return_exceptions=True)

    # ----------------------------------------------------------------- tasks
    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        for handle in handles:
            job = asyncio.ensure_future(self._run(handle))
            self.jobs[handle.uid] = job
            job.add_done_callback(self._forget(handle.uid))

    def _forget(self, uid: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_: asyncio.Task[None]) -> None:
            self.jobs.pop(uid, None)

        return forget

    async def cancel(self, handle: TaskHandle) -> bool:
        job = self.jobs.get(handle.uid)
        if job is None or job.done():
            return False
        job.cancel()  # aborts its HTTP requests: httpx closes their connections
        await asyncio.wait([job], timeout=30.0)
        return True

    async def _run(self, handle: TaskHandle) -> None:
        task = handle.task
        assert isinstance(task, AITask)
        started: list[bool] = []

        def running(endpoint: str) -> None:
            if not started:  # a list of prompts runs from its first request: task.worker is that endpoint
                started.append(True)
                handle.running(endpoint)

        t0 = time.monotonic()
        try:
            options = _options(task)
            prompts = task.prompt if isinstance(task.prompt, list) else [task.prompt]
            replies = await _all_or_none([self._one(task, prompt, options, running) for prompt in prompts])
        except (InferenceError, TaskValidationError) as exc:
            handle.failed(exc)
            return
        except Exception as exc:  # noqa: BLE001 - any other surprise fails this task, not the backend
            handle.failed(BackendError(f"inference backend: task {task.uid}: {type(exc).__name__}: {exc}"))
            return
        # a list for one prompt too, as rhapsody-py gives it: code written for it reads response[0]
        texts = [reply.answer.text for reply, _, _ in replies]
        handle.answered(texts, task_metrics(replies, time.monotonic() - t0))

    async def _one(self, task: AITask, prompt: str, options: dict[str, Any], running: Any) -> tuple[Reply, str, str]:
        assert self.router is not None
        candidates = await self.router.candidates(task, self.log)
        alive = [s for s in candidates if self._death(s) is None] or candidates
        state = self.balancer.pick(alive)
        state.load += 1
        try:
            async with state.gate:  # waits here while the endpoint's slots are busy
                death = self._death(state)
                if death is not None:
                    raise InferenceError(f"task {task.uid}: {death}", url=state.url)
                running(state.url)
                return await self._ask(task, prompt, options, state)
        finally:
            state.load -= 1

    async def _ask(self, task: AITask, prompt: str, options: dict[str, Any], state: EndpointState) -> tuple[Reply, str, str]:
        assert self.router is not None
        model = self.router.model_for(task, state)
        api = choose_api(task, state.endpoint.chat, options.get("api"))
        body = request_body(
            task,
            prompt,
            model,
            api,
            max_tokens=self.max_tokens,
            stream=options.get("stream", self.stream),
            extra=options.get("extra_body", {}),
        )
        server = self.by_url.get(state.url)
        on_drop = None if server is None else _restart_waiter(server, task.uid)
        reply = await self.sender.send(state, self.router.http[state.url], api, body, on_drop, task.uid)
        return reply, state.url, api

    def _death(self, state: EndpointState) -> str | None:
        server = self.by_url.get(state.url)
        return None if server is None else server.death


def _restart_waiter(server: ManagedServer, uid: str) -> Callable[[], Awaitable[None]]:
    """After a dropped connection to a managed server: wait out its restart,
    and stop retrying at once if it is gone for good."""

    async def wait() -> None:
        await server.wait_up()
        if server.death is not None:
            raise InferenceError(f"task {uid}: {server.death}", url=server.url)

    return wait


def _options(task: AITask) -> dict[str, Any]:
    """The task's backend-specific keys, checked (a bad value fails the task)."""
    options = dict(task.task_backend_specific_kwargs)
    if options.get("api") not in (None, CHAT, COMPLETIONS):
        raise TaskValidationError(
            task.uid, "task_backend_specific_kwargs['api']", f"must be 'chat' or 'completions', got {options['api']!r}"
        )
    if not isinstance(options.get("stream", False), bool):
        raise TaskValidationError(task.uid, "task_backend_specific_kwargs['stream']", f"must be a bool, got {options['stream']!r}")
    if not isinstance(options.get("extra_body", {}), dict):
        raise TaskValidationError(task.uid, "task_backend_specific_kwargs['extra_body']", "must be a dict of request fields")
    return options


async def _all_or_none(coros: list[Awaitable[tuple[Reply, str, str]]]) -> list[tuple[Reply, str, str]]:
    """Every prompt's reply in order; the first failure cancels the rest and is raised."""
    jobs = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
        for job in jobs:
            if job.done() and job.exception() is not None:
                raise job.exception()  # type: ignore[misc]
        return [job.result() for job in jobs]
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
