"""A model request as one value: what is asked, of which tier, in which form, for whom.

Everything that decides an answer travels together, from the session's call to the
endpoint: the messages, the output model the answer must validate against, the tier and
the sampling parameters (or the tools of a tool-using turn), and the labels of its records
(the partition it is for, the sample of a vote). Waiting for an identical request in
flight, the cache key, the body sent to each endpoint and the reading of its answer all
come from this one value, so none of them can disagree about what was asked.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from resources.gateway.config import Tier
from resources.gateway.response_cache import request_key

Messages = list[dict[str, Any]]
ContextOverflow = Literal["fallback", "cut"]


@functools.lru_cache(maxsize=512)
def response_format_for(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `json_schema` response format; llama.cpp turns it into a grammar.

    Built once per schema class (pydantic rebuilds the JSON schema on every call, about
    140 us, on every model call); callers treat it as read-only."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False},
    }


class ModelRequest(BaseModel):
    """One request: a structured answer of `output`, or, with `tools`, one turn of a tool-using
    conversation (whose `output` is `AgentTurn`). `sample` numbers otherwise identical requests
    (the samples of a vote), so that each is cached apart. `context_overflow` is what happens when
    no endpoint's context window takes the prompt: the request fails ("fallback": only a larger
    window is tried), or its longest message is cut to fit and it is asked again ("cut")."""

    model_config = ConfigDict(frozen=True)

    messages: Messages
    output: type[BaseModel]
    tier: Tier = "fast"
    max_tokens: int = 256
    temperature: float = 0.0
    tools: list[dict[str, Any]] | None = None
    partition: str = ""
    sample: int = 0
    context_overflow: ContextOverflow = "fallback"

    def parameters(self) -> dict[str, Any]:
        """What is sent beside the model and the messages."""
        if self.tools is not None:
            return {"tools": list(self.tools), "max_tokens": self.max_tokens, "temperature": self.temperature}
        return {
            "response_format": response_format_for(self.output),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def body(self, model: str) -> dict[str, Any]:
        """The chat completion body one endpoint is sent for `model` on its first try (what a
        provider batch's line holds, so that a batch asks exactly what a live call would)."""
        return {"model": model, "messages": self.messages, **self.parameters()}

    def key(self, models: list[str]) -> str:
        """The response cache's key: the models of the chain that may answer, and everything sent."""
        identity: dict[str, Any] = {"models": models, "messages": self.messages, **self.parameters()}
        if self.sample:
            identity["sample"] = self.sample
        if self.context_overflow == "cut":  # a cut answer is not the answer to the whole prompt
            identity["context_overflow"] = "cut"
        return request_key(identity)

    @property
    def input_chars(self) -> int:
        return sum(len(str(m.get("content") or "")) for m in self.messages)

    def answer_text(self, response: Any) -> str:
        """The answer as the JSON text `output` validates: the message's text, or for a tool-using
        turn its text and tool calls as the JSON of an `AgentTurn`."""
        if not response.choices:
            return ""
        message = response.choices[0].message
        if self.tools is None:
            return message.content or ""
        calls = [
            {"id": call.id, "name": call.function.name, "arguments": call.function.arguments or "{}"}
            for call in (message.tool_calls or [])
            if getattr(call, "function", None) is not None
        ]
        return json.dumps({"content": message.content or "", "tool_calls": calls})
