"""Tool-using conversations: a turn the model takes, and what it cost.

A turn is an answer like any other: validated, so an empty message is re-asked, and
cached as its JSON form, so an unchanged conversation replays without a call. The caller
runs the tools and continues the conversation from `AgentTurn.as_message`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator


class ToolCall(BaseModel):
    """A function the model asked to call; `arguments` is the JSON text it wrote, parsed by the tool."""

    id: str
    name: str
    arguments: str = "{}"


class AgentTurn(BaseModel):
    """One assistant message of a tool-using conversation: text, tool calls, or both."""

    content: str = ""
    tool_calls: list[ToolCall] = []

    @model_validator(mode="after")
    def _not_empty(self) -> "AgentTurn":
        if not self.content.strip() and not self.tool_calls:
            raise ValueError("the answer holds neither text nor a tool call")
        return self

    def as_message(self) -> dict[str, Any]:
        """The turn as the assistant message the conversation continues from."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


class ToolStep(BaseModel):
    """A validated turn, with what it cost, for an agent's caps and records."""

    turn: AgentTurn
    trace_id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False
