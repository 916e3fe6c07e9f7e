"""The servers a backend sends requests to, and how it picks one per request."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import attrs


def _base_url(value: str) -> str:
    url = value.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"an endpoint URL starts with http:// or https://, got {value!r}")
    return url if url.endswith("/v1") else f"{url}/v1"


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Endpoint {attribute.name} must be a positive int, got {value!r}")


@attrs.frozen
class Endpoint:
    """One OpenAI-compatible server.

    ``url``: its base URL (``http://host:port`` or ``.../v1``); ``model``: the
    model to ask for when a task names none (default: the first the server
    lists); ``chat``: it serves a chat (instruction-tuned) model, so a plain
    prompt goes to ``/v1/chat/completions`` (a task with a ``system_prompt``
    always does); ``concurrency``: requests in flight to it at once, the rest
    wait their turn; ``api_key``: sent as a bearer token."""

    url: str = attrs.field(converter=_base_url)
    model: str | None = None
    chat: bool = False
    concurrency: int = attrs.field(default=4, validator=_positive)
    api_key: str | None = attrs.field(default=None, repr=False)


class EndpointState:
    """What the backend tracks per endpoint: the concurrency gate, requests
    waiting or in flight (for load balancing), and the models it serves."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.gate = asyncio.Semaphore(endpoint.concurrency)
        self.load = 0  # requests waiting for or holding a slot here
        self.models: frozenset[str] | None = None  # None: not known yet (never reached)

    @property
    def url(self) -> str:
        return self.endpoint.url

    def serves(self, model: str | None) -> bool:
        """Whether a request for ``model`` may go here (unknown model lists admit it)."""
        if model is None or self.models is None:
            return True
        return model in self.models or model == self.endpoint.model


class Balancer:
    """Least-loaded choice (load relative to concurrency); ties go round-robin
    so equal endpoints share the work."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, candidates: Sequence[EndpointState]) -> EndpointState:
        if not candidates:
            raise ValueError("no endpoint to pick from")
        start = next(self._turn) % len(candidates)
        rotated = [*candidates[start:], *candidates[:start]]
        return min(rotated, key=lambda s: s.load / s.endpoint.concurrency)
