"""`InferenceBackend`: the public class; it only builds the engine."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from rhapsody.execution.backend import Backend
from rhapsody_inference.client import RetryPolicy
from rhapsody_inference.endpoints import Endpoint
from rhapsody_inference.engine import InferenceEngine
from rhapsody_inference.server import ManagedServer


class InferenceBackend(Backend):
    """Runs `AITask`s on OpenAI-compatible servers (vLLM, llama.cpp, SGLang, TGI, Ollama).

    ``endpoints``: servers already running (`Endpoint`s or base URLs);
    ``servers``: `ManagedServer`s the backend starts, watches (one restart if
    one dies) and stops with itself; each becomes an endpoint too. Requests are
    spread over the endpoints that serve a task's model, least loaded first.

    ``request_timeout``: seconds one request attempt may take; ``retries`` /
    ``backoff``: further attempts after HTTP 429/503 or a dropped connection,
    waiting ``backoff`` seconds doubling; ``max_tokens``: the cap for tasks
    that set none (chat requests have no server default on some servers);
    ``stream``: stream answers (measures the time to first token);
    ``http_transport``: an httpx transport for every request (a proxy, a
    custom network stack, fault injection in tests)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint | str] = (),
        *,
        servers: Sequence[ManagedServer] | ManagedServer = (),
        name: str = "inference",
        request_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_tokens: int = 256,
        stream: bool = True,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        servers = [servers] if isinstance(servers, ManagedServer) else list(servers)
        given = [e if isinstance(e, Endpoint) else Endpoint(e) for e in endpoints]
        if not given and not servers:
            raise ValueError("InferenceBackend needs endpoints= (running servers) or servers= (ManagedServers to start)")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        for label, value in (("request_timeout", request_timeout), ("connect_timeout", connect_timeout), ("max_tokens", max_tokens)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        engine = InferenceEngine(
            given, servers, request_timeout=float(request_timeout), connect_timeout=float(connect_timeout),
            retry=RetryPolicy(retries=retries, backoff=backoff), max_tokens=int(max_tokens), stream=stream,
            transport=http_transport,
        )  # fmt: skip
        super().__init__(engine, name)

    @property
    def servers(self) -> list[ManagedServer]:
        """The servers this backend manages (their ``url``, ``process``, ``restarts``)."""
        engine = self.engine
        assert isinstance(engine, InferenceEngine)
        return engine.servers
