"""Which endpoints may take a task's requests, and which model to ask for."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from rhapsody.task import AITask
from rhapsody_inference.endpoints import Endpoint, EndpointState
from rhapsody_inference.errors import InferenceError


class Router:
    """The backend's endpoints, each with its HTTP connection pool."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        timeout: float,
        connect_timeout: float,
        backend: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout, self.connect_timeout, self.backend, self.transport = timeout, connect_timeout, backend, transport
        self.states: list[EndpointState] = []
        self.http: dict[str, httpx.AsyncClient] = {}
        for endpoint in endpoints:
            self.add(endpoint)

    def add(self, endpoint: Endpoint) -> EndpointState:
        state = EndpointState(endpoint)
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        limits = httpx.Limits(max_connections=endpoint.concurrency, max_keepalive_connections=endpoint.concurrency)
        timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout)
        self.http[state.url] = httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers, transport=self.transport)
        self.states.append(state)
        return state

    async def close(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.http.values()), return_exceptions=True)
        self.http.clear()

    async def refresh_models(self, states: Sequence[EndpointState], log: Any) -> None:
        """Ask each server which models it serves (``GET /v1/models``); one that
        does not answer keeps an unknown list (requests will say why)."""

        async def ask(state: EndpointState) -> None:
            try:
                response = await self.http[state.url].get(f"{state.url}/models", timeout=min(self.timeout, 15.0))
                response.raise_for_status()
                state.models = frozenset(str(m["id"]) for m in response.json().get("data", []) if "id" in m)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning("endpoint.models_unknown", url=state.url, error=f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(ask(s) for s in states))

    def for_task(self, task: AITask) -> list[EndpointState]:
        """The endpoints the task may use: the one it names, else all."""
        if task.inference_endpoint is None:
            return list(self.states)
        try:
            url = Endpoint(task.inference_endpoint).url
        except ValueError as exc:
            raise InferenceError(f"task {task.uid}: inference_endpoint: {exc}") from None
        named = [s for s in self.states if s.url == url]
        return named or [self.add(Endpoint(url))]  # a server this backend was not given: used as is

    async def candidates(self, task: AITask, log: Any) -> list[EndpointState]:
        """Endpoints that serve the task's model; an `InferenceError` naming the
        models on offer if none does (servers that accept any name, like
        llama.cpp's, are caught here by their model list)."""
        states = self.for_task(task)
        if task.model is None:
            return states
        serving = [s for s in states if s.serves(task.model)]
        if not serving:
            await self.refresh_models(states, log)  # a server may have loaded it since
            serving = [s for s in states if s.serves(task.model)]
        if not serving:
            offer = "; ".join(f"{s.url}: {', '.join(sorted(s.models or ())) or 'none'}" for s in states)
            raise InferenceError(
                f"task {task.uid}: model {task.model!r} is not served by any endpoint of backend {self.backend!r} (served: {offer})",
                code="model_not_found",
            )
        return serving

    @staticmethod
    def model_for(task: AITask, state: EndpointState) -> str:
        model = task.model or state.endpoint.model
        if model is None and state.models:
            model = sorted(state.models)[0]
        if model is None:
            raise InferenceError(f"task {task.uid}: no model to ask {state.url} for: give the task model= or the Endpoint model=")
        return model
