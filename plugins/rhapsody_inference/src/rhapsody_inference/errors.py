"""Why an inference request failed, as a `BackendError` a FAILED task carries."""

from __future__ import annotations

from typing import Any

from rhapsody.errors import BackendError


class InferenceError(BackendError):
    """A request to a language-model server failed for good (after any retries).

    ``url``: the endpoint; ``status``: the HTTP status, None when no answer came
    (unreachable, timed out); ``code``: the server's error code when it gave one
    (``context_length_exceeded``, ``model_not_found``)."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.url, self.status, self.code = url, status, code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (str(self), self.url, self.status, self.code))


def _rebuild(message: str, url: str | None, status: int | None, code: str | None) -> InferenceError:
    return InferenceError(message, url=url, status=status, code=code)


def server_message(body: bytes) -> tuple[str, str | None]:
    """The server's own explanation and error code from an error body: OpenAI's
    ``{"error": {"message", "code"}}``, FastAPI's ``{"detail": ...}``, or the raw text."""
    import json  # noqa: PLC0415 - only on the error path

    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:2000] or "(empty body)", None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
            return str(error.get("message") or error), None if code is None else str(code)
        if isinstance(error, str):
            return error, None
        if "detail" in data:
            return str(data["detail"])[:2000], None
    return text[:2000], None
