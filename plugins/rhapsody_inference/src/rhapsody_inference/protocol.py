"""The OpenAI wire format: the request body for one prompt, and the answer
read back from a whole response or from a stream of chunks."""

from __future__ import annotations

from typing import Any

import attrs

from rhapsody.task import AITask

CHAT, COMPLETIONS = "chat", "completions"
PATHS = {CHAT: "/chat/completions", COMPLETIONS: "/completions"}


def choose_api(task: AITask, endpoint_chat: bool, forced: str | None) -> str:
    """The one rule: chat when the task has a system prompt or the endpoint
    serves a chat model, plain completions otherwise; the task's ``api`` key
    (``task_backend_specific_kwargs``) overrides it."""
    if forced is not None:
        return forced
    return CHAT if task.system_prompt is not None or endpoint_chat else COMPLETIONS


def request_body(
    task: AITask, prompt: str, model: str, api: str, *, max_tokens: int, stream: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": task.max_tokens or max_tokens}
    if api == CHAT:
        system = [{"role": "system", "content": task.system_prompt}] if task.system_prompt is not None else []
        body["messages"] = [*system, {"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    optional = {"temperature": task.temperature, "top_p": task.top_p, "top_k": task.top_k, "stop": task.stop_sequences}
    body.update({key: value for key, value in optional.items() if value is not None})
    if stream:  # usage arrives in a last chunk when the server supports it (vLLM, OpenAI)
        body.update(stream=True, stream_options={"include_usage": True})
    body.update(extra)
    return body


@attrs.define
class Answer:
    """One prompt's answer as it arrives."""

    api: str
    parts: list[str] = attrs.field(factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    chunks_with_text: int = 0
    complete: bool = False  # a finish reason or the end-of-stream marker was seen

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def feed_chunk(self, chunk: dict[str, Any]) -> bool:
        """Take one streamed chunk; True if it carried generated text."""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        text = ""
        for choice in chunk.get("choices") or ():
            if self.api == CHAT:
                text += (choice.get("delta") or {}).get("content") or ""
            else:
                text += choice.get("text") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        self.complete = self.complete or self.finish_reason is not None
        if text:
            self.parts.append(text)
            self.chunks_with_text += 1
        return bool(text)

    def take_whole(self, data: dict[str, Any]) -> None:
        """Take a complete (non-streamed) response."""
        choice = (data.get("choices") or [{}])[0]
        if self.api == CHAT:
            self.parts = [(choice.get("message") or {}).get("content") or ""]
        else:
            self.parts = [choice.get("text") or ""]
        self.finish_reason = choice.get("finish_reason")
        self.complete = True
        self.usage = data.get("usage") if isinstance(data.get("usage"), dict) else None

    def tokens(self) -> dict[str, int | None]:
        """Token counts as the server reported them. A stream without a usage
        chunk (llama.cpp) counts completion tokens from the chunks: its servers
        send one per token; the prompt count is then unknown (None)."""
        usage = self.usage or {}
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens", self.chunks_with_text if self.usage is None else None)
        total = usage.get("total_tokens") if self.usage else None
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
