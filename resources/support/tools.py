"""Tools a model may call, behind one small interface whatever serves them.

An agent sees a `Toolbox`: the specs it may offer the model (name, description, JSON
Schema of the arguments) and `call`, which never raises for what the model got wrong.
An unknown tool, arguments that do not validate, or a tool that failed come back as a
`ToolResult` with `ok=False` and the reason, which the agent hands to the model as the
tool's answer: a model's mistake is the model's to correct, never a reason to fail a run.

`FunctionToolbox` serves plain Python functions whose single argument is a pydantic
model; `resources.support.mcp_tools.McpToolbox` serves the tools of any MCP server through the
same interface, so an agent is not wired to where its tools live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from pydantic import BaseModel, Field, ValidationError

MAX_RESULT_CHARS = 4_000


class ToolSpec(BaseModel):
    """What the model is told about one tool."""

    name: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON Schema of the arguments object.")

    def openai(self) -> dict[str, Any]:
        """The tool in the form of OpenAI's `tools` request parameter."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class ToolResult(BaseModel):
    """One tool call's outcome, as text the model reads back."""

    ok: bool
    content: str
    error_kind: str = Field(default="", description="unknown_tool, invalid_arguments or tool_error when not ok.")


class Toolbox(Protocol):
    def specs(self) -> list[ToolSpec]: ...

    def call(self, name: str, arguments: dict[str, Any] | str) -> ToolResult: ...


def unknown_tool(name: str, available: Sequence[str]) -> ToolResult:
    """The answer to a call of a tool that is not offered: the model reads which ones are."""
    return ToolResult(
        ok=False,
        error_kind="unknown_tool",
        content=f"unknown tool {name!r}; available tools: {', '.join(sorted(available))}",
    )


def parse_arguments(arguments: dict[str, Any] | str) -> dict[str, Any]:
    """A tool call's arguments as an object; models send a JSON string, MCP an object."""
    if isinstance(arguments, dict):
        return arguments
    value = json.loads(arguments or "{}")
    if not isinstance(value, dict):
        raise ValueError(f"arguments must be a JSON object, got {type(value).__name__}")
    return value


def as_text(value: Any) -> str:
    """A tool's return value as the text the model reads, capped."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json()
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= MAX_RESULT_CHARS else text[: MAX_RESULT_CHARS - 1] + "…"


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str
    arguments: type[BaseModel]
    function: Callable[[Any], Any]

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.arguments.model_json_schema())


class FunctionToolbox:
    """Python functions as tools; each takes one pydantic arguments model."""

    def __init__(self, tools: Sequence[FunctionTool]):
        self._tools = {tool.name: tool for tool in tools}

    def specs(self) -> list[ToolSpec]:
        return [tool.spec() for tool in self._tools.values()]

    def tool(self, name: str) -> FunctionTool | None:
        return self._tools.get(name)

    def call(self, name: str, arguments: dict[str, Any] | str) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            return unknown_tool(name, list(self._tools))
        try:
            parsed = tool.arguments.model_validate(parse_arguments(arguments))
        except (ValueError, ValidationError) as exc:
            return ToolResult(ok=False, error_kind="invalid_arguments", content=f"invalid arguments for {name}: {exc}")
        try:
            return ToolResult(ok=True, content=as_text(tool.function(parsed)))
        except Exception as exc:  # a tool's failure is reported to the model, not raised through the run
            return ToolResult(ok=False, error_kind="tool_error", content=f"{name} failed: {type(exc).__name__}: {exc}")


class CombinedToolbox:
    """Several toolboxes as one (the support desk's own tools, and those of configured MCP
    servers): a name is served by the first toolbox that offers it."""

    def __init__(self, toolboxes: Sequence[Toolbox]):
        self._toolboxes = list(toolboxes)
        self._owner: dict[str, Toolbox] | None = None

    def _owners(self) -> dict[str, Toolbox]:
        if self._owner is None:
            owner: dict[str, Toolbox] = {}
            for toolbox in self._toolboxes:
                for spec in toolbox.specs():
                    owner.setdefault(spec.name, toolbox)
            self._owner = owner
        return self._owner

    def specs(self) -> list[ToolSpec]:
        seen: set[str] = set()
        specs = []
        for toolbox in self._toolboxes:
            for spec in toolbox.specs():
                if spec.name not in seen:
                    seen.add(spec.name)
                    specs.append(spec)
        return specs

    def call(self, name: str, arguments: dict[str, Any] | str) -> ToolResult:
        toolbox = self._owners().get(name)
        if toolbox is None:
            return unknown_tool(name, list(self._owners()))
        return toolbox.call(name, arguments)
