"""Sending one request to one endpoint: timeout, retries with backoff on
overload (429/503) and dropped connections, streaming with time to first token."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx

from rhapsody_inference.endpoints import EndpointState
from rhapsody_inference.errors import InferenceError, server_message
from rhapsody_inference.protocol import PATHS, Answer

#: statuses that mean "busy, try again": rate limited, or overloaded / restarting
RETRY_STATUSES = frozenset({429, 503})
#: the connection failed or dropped (refused while a server restarts, reset mid-answer)
RETRY_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@attrs.frozen
class RetryPolicy:
    """``retries`` more attempts after the first, ``backoff`` seconds before the
    first retry, doubling up to ``backoff_max`` (with jitter); a server's
    ``Retry-After`` is honoured up to ``backoff_max``."""

    retries: int = 3
    backoff: float = 0.5
    backoff_max: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max)
        jitter = 0.5 + random.random() / 2  # spread clients that were refused together
        return float(min(self.backoff * 2**attempt, self.backoff_max) * jitter)


@attrs.define
class Reply:
    answer: Answer
    latency: float  # seconds from the first attempt to the last byte
    first_token: float | None  # seconds from the first attempt to the first text (streamed only)
    attempts: int
    started_at: float  # epoch seconds, for lining requests up across endpoints
    ended_at: float


class _CutShort(Exception):
    """A stream ended without a finish reason or ``[DONE]``."""


def _unstreamed(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in ("stream", "stream_options")}


class _Retryable(Exception):
    def __init__(self, error: InferenceError, retry_after: float | None = None, *, dropped: bool = False) -> None:
        super().__init__(str(error))
        self.error, self.retry_after, self.dropped = error, retry_after, dropped


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class Sender:
    def __init__(self, *, timeout: float, retry: RetryPolicy) -> None:
        self.timeout, self.retry = timeout, retry
        self.log: Any = None  # the backend's structlog logger, set when the engine starts

    async def send(
        self,
        state: EndpointState,
        http: httpx.AsyncClient,
        api: str,
        body: dict[str, Any],
        on_drop: Callable[[], Awaitable[None]] | None = None,
        uid: str | None = None,
    ) -> Reply:
        """One prompt's answer from ``state``'s server, or an `InferenceError`.
        ``on_drop`` is awaited after a failed connection before retrying (a
        managed server waits there while it restarts)."""
        url = state.url + PATHS[api]
        t0, started_at = time.monotonic(), time.time()
        attempts = retried = 0
        while True:
            answer = Answer(api)
            attempts += 1
            try:
                first = await self._attempt(http, url, body, answer, t0)
                return Reply(answer, time.monotonic() - t0, first, attempts, started_at, time.time())
            except _CutShort:
                # llama.cpp answers a streamed request it rejects (prompt too long) with an
                # empty 200 stream: asked again without streaming, it gives its own error.
                body = _unstreamed(body)  # (once: the new body does not stream)
                if self.log is not None:
                    self.log.info("request.stream_cut_short", task=uid, url=url)
            except _Retryable as busy:
                if retried == self.retry.retries:
                    raise InferenceError(
                        f"{busy.error} (gave up after {attempts} attempts over {time.monotonic() - t0:.1f} s)",
                        url=url, status=busy.error.status, code=busy.error.code,
                    ) from None  # fmt: skip
                retried += 1
                if self.log is not None:
                    self.log.warning("request.retry", task=uid, url=url, attempt=attempts, status=busy.error.status, error=str(busy.error))
                if busy.dropped and on_drop is not None:
                    await on_drop()
                await asyncio.sleep(self.retry.delay(retried - 1, busy.retry_after))

    async def _attempt(self, http: httpx.AsyncClient, url: str, body: dict[str, Any], answer: Answer, t0: float) -> float | None:
        try:
            return await asyncio.wait_for(self._exchange(http, url, body, answer, t0), self.timeout)
        except asyncio.TimeoutError:
            raise InferenceError(f"POST {url}: no complete answer within {self.timeout:g} s (request timeout)", url=url) from None
        except RETRY_ERRORS as exc:
            error = InferenceError(f"POST {url}: cannot reach the server: {type(exc).__name__}: {exc or 'connection dropped'}", url=url)
            raise _Retryable(error, dropped=True) from None
        except httpx.HTTPError as exc:
            raise InferenceError(f"POST {url}: {type(exc).__name__}: {exc}", url=url) from None

    async def _exchange(self, http: httpx.AsyncClient, url: str, body: dict[str, Any], answer: Answer, t0: float) -> float | None:
        async with http.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                message, code = server_message(await response.aread())
                error = InferenceError(
                    f"POST {url}: HTTP {response.status_code}" + (f" {code}" if code else "") + f": {message}",
                    url=url, status=response.status_code, code=code,
                )  # fmt: skip
                if response.status_code in RETRY_STATUSES:
                    raise _Retryable(error, _retry_after(response))
                raise error
            if "text/event-stream" not in response.headers.get("content-type", ""):
                answer.take_whole(json.loads(await response.aread()))
                return None
            first = await _read_stream(response, answer, t0, url)
            if not answer.complete and "stream" in body:
                raise _CutShort
            return first


async def _read_stream(response: httpx.Response, answer: Answer, t0: float, url: str) -> float | None:
    first: float | None = None
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, keep-alives
        data = line[5:].strip()
        if data == "[DONE]":
            answer.complete = True
            break
        chunk = json.loads(data)
        if "error" in chunk:
            message, code = server_message(data.encode())
            raise InferenceError(f"POST {url}: the server failed mid-answer: {message}", url=url, status=200, code=code)
        if answer.feed_chunk(chunk) and first is None:
            first = time.monotonic() - t0
    return first
