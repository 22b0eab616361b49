"""Refusals of what was asked, told apart from an endpoint being down or a request being wrong.

A provider that refuses a prompt for its length or its content is up, and another endpoint
may take the same request: a larger context window, or one configured for what a content
policy refuses. Each provider says so in its own shape, so the shapes are read here, once,
and the rest of the gateway speaks of two kinds: `CONTEXT_WINDOW` and `CONTENT_POLICY`.

Context window: OpenAI (code `context_length_exceeded`), vLLM ("This model's maximum context
length is N tokens"), llama.cpp's server (type `exceed_context_size_error`, with `n_ctx`).
Content policy: OpenAI (code `content_policy_violation`), Azure OpenAI (code `content_filter`,
inner code `ResponsibleAIPolicyViolation`), and a 200 whose choice was cut by the filter
(`finish_reason: content_filter`) or whose message is a refusal (structured outputs).
"""

from __future__ import annotations

import re
from typing import Any

import openai

CONTEXT_WINDOW = "context window"
CONTENT_POLICY = "content policy"

_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error"}
_CONTEXT_TEXT = re.compile(
    r"maximum context length|exceeds the available context size|context length exceeded|context window", re.I
)
_STATED_WINDOW = re.compile(r"maximum context length is (\d+) tokens", re.I)
_POLICY_CODES = {"content_policy_violation", "content_filter", "responsibleaipolicyviolation"}
_POLICY_TEXT = re.compile(r"content management policy|content policy|safety system", re.I)


def _error_body(error: openai.APIStatusError) -> dict[str, Any]:
    """The error object of the answer (the client already unwraps `{"error": {...}}`)."""
    body = error.body
    return body if isinstance(body, dict) else {}


def _codes(body: dict[str, Any]) -> set[str]:
    inner = body.get("innererror")
    codes = [body.get("code"), body.get("type"), inner.get("code") if isinstance(inner, dict) else None]
    return {str(c).lower() for c in codes if c}


def refusal_kind(error: BaseException) -> str:
    """CONTEXT_WINDOW or CONTENT_POLICY when `error` is such a refusal, else ""."""
    if not isinstance(error, openai.APIStatusError) or not 400 <= error.status_code < 500:
        return ""
    body = _error_body(error)
    codes = _codes(body)
    message = str(body.get("message") or error.message or "")
    if codes & _CONTEXT_CODES or _CONTEXT_TEXT.search(message):
        return CONTEXT_WINDOW
    if codes & _POLICY_CODES or _POLICY_TEXT.search(message):
        return CONTENT_POLICY
    return ""


def stated_window(error: BaseException) -> int:
    """The context window in tokens the refusal names (OpenAI and vLLM in the message, llama.cpp
    as `n_ctx`); 0 when it names none."""
    if not isinstance(error, openai.APIStatusError):
        return 0
    body = _error_body(error)
    if isinstance(body.get("n_ctx"), int):
        return int(body["n_ctx"])
    match = _STATED_WINDOW.search(str(body.get("message") or error.message or ""))
    return int(match.group(1)) if match else 0


def answer_refusal(response: Any) -> str:
    """Why a 200 answer is a content-policy refusal rather than an answer ("" when it is an answer):
    its choice stopped at the content filter, or its message carries a refusal."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        return ""
    choice = choices[0]
    if choice.finish_reason == "content_filter":
        return "the answer was withheld by the provider's content filter (finish_reason content_filter)"
    refusal = getattr(choice.message, "refusal", None)
    return f"the model refused: {refusal}" if refusal else ""
