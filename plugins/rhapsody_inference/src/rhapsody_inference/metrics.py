"""What lands in ``AITask.metrics``: tokens and timings per request and for the task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rhapsody_inference.client import Reply


def request_metrics(reply: Reply, url: str, api: str) -> dict[str, Any]:
    return {
        "endpoint": url,
        "api": api,
        **reply.answer.tokens(),
        "latency_s": round(reply.latency, 6),
        "time_to_first_token_s": None if reply.first_token is None else round(reply.first_token, 6),
        "finish_reason": reply.answer.finish_reason,
        "attempts": reply.attempts,
        "started_at": reply.started_at,
        "ended_at": reply.ended_at,
    }


def _total(values: list[Any]) -> int | None:
    return None if any(v is None for v in values) else sum(values)


def task_metrics(replies: list[tuple[Reply, str, str]], wall: float) -> dict[str, Any]:
    """Sums over the task's requests (None when a server did not report a count),
    the task's wall time in the engine (waiting for a slot included), its first
    token, and each request under ``requests`` in prompt order."""
    requests = [request_metrics(reply, url, api) for reply, url, api in replies]
    firsts = [r["time_to_first_token_s"] for r in requests if r["time_to_first_token_s"] is not None]
    return {
        "prompt_tokens": _total([r["prompt_tokens"] for r in requests]),
        "completion_tokens": _total([r["completion_tokens"] for r in requests]),
        "total_tokens": _total([r["total_tokens"] for r in requests]),
        "latency_s": round(wall, 6),
        "time_to_first_token_s": min(firsts) if firsts else None,
        "endpoints": sorted({r["endpoint"] for r in requests}),
        "requests": requests,
    }
