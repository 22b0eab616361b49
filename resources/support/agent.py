"""A tool-using agent with hard limits: the loop, not the task.

The model proposes tool calls, the toolbox runs them, the results go back into the
conversation, until the model answers in text. Every loop here ends: model turns,
tool calls, tokens and wall time each have a cap, checked before the next step, and
the cap that stopped a run is its recorded reason. A stopped agent has no answer; the
caller escalates its task to a person rather than publishing half a conversation.

What the model gets wrong stays inside the conversation: an unknown tool, arguments
that do not validate and a tool that failed are answered as tool results, so the model
can correct itself and the run goes on. Only the gateway's own failures (no endpoint
answered) end the agent, as `failed`, and a spent run budget propagates, as for any call.
"""

from __future__ import annotations

import time
from typing import Callable, Literal

from pydantic import BaseModel, Field

from resources.gateway.config import Tier
from resources.gateway.errors import ModelCallError
from resources.gateway.session import ModelSession
from resources.support.tools import Toolbox

PREVIEW_CHARS = 300


class AgentLimits(BaseModel):
    """An agent's hard caps; the triage configuration exposes these same declarations."""

    max_iterations: int = Field(default=6, ge=1, description="Model turns one reply agent may take.")
    max_tool_calls: int = Field(default=8, ge=0, description="Tool calls one reply agent may make.")
    max_tokens: int = Field(
        default=12_000, ge=1, description="Prompt and completion tokens one reply agent may spend over all turns."
    )
    max_seconds: float = Field(default=120.0, gt=0, description="Wall time one reply agent may take, in seconds.")


class AgentStep(BaseModel):
    """One model turn or one tool call, as the run's record shows it."""

    kind: Literal["model", "tool"]
    tool: str = ""
    arguments: str = ""
    ok: bool = True
    error_kind: str = ""
    preview: str = Field(default="", description="The start of the model's text or of the tool's result.")
    trace_id: str = ""
    tokens: int = 0


class AgentRun(BaseModel):
    status: Literal["answered", "stopped", "failed"]
    reason: str = Field(default="", description="Why it stopped or failed: the cap reached, or the gateway's error.")
    answer: str = ""
    steps: list[AgentStep] = []
    iterations: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tools_used(self) -> list[str]:
        return [s.tool for s in self.steps if s.kind == "tool"]


def run_agent(
    llm: ModelSession,
    messages: list[dict],
    toolbox: Toolbox,
    limits: AgentLimits,
    *,
    tier: Tier = "strong",
    max_tokens: int = 512,
    partition: str = "",
    clock: Callable[[], float] = time.monotonic,
) -> AgentRun:
    started = clock()
    conversation = list(messages)
    tools = [spec.openai() for spec in toolbox.specs()]
    run = AgentRun(status="stopped")

    def stop(reason: str) -> AgentRun:
        run.status, run.reason, run.seconds = "stopped", reason, round(clock() - started, 3)
        return run

    while True:
        if run.iterations >= limits.max_iterations:
            return stop(f"iteration cap: {run.iterations} model turns without a final answer")
        if run.tokens >= limits.max_tokens:
            return stop(f"token cap: {run.tokens} tokens spent (limit {limits.max_tokens})")
        if clock() - started >= limits.max_seconds:
            return stop(f"time cap: {clock() - started:.1f} s (limit {limits.max_seconds:g} s)")
        try:
            step = llm.tool_step(conversation, tools, tier=tier, max_tokens=max_tokens, partition=partition)
        except ModelCallError as exc:
            run.status, run.reason, run.seconds = "failed", str(exc)[:500], round(clock() - started, 3)
            return run
        run.iterations += 1
        spent = step.prompt_tokens + step.completion_tokens
        run.tokens += spent
        turn = step.turn
        run.steps.append(
            AgentStep(kind="model", preview=turn.content[:PREVIEW_CHARS], trace_id=step.trace_id, tokens=spent)
        )
        if not turn.tool_calls:
            run.status, run.answer, run.seconds = "answered", turn.content.strip(), round(clock() - started, 3)
            return run
        conversation.append(turn.as_message())
        for call in turn.tool_calls:
            if run.tool_calls >= limits.max_tool_calls:
                return stop(f"tool-call cap: {run.tool_calls} tool calls made, the model asked for more")
            result = toolbox.call(call.name, call.arguments)
            run.tool_calls += 1
            run.tool_errors += 0 if result.ok else 1
            run.steps.append(
                AgentStep(
                    kind="tool",
                    tool=call.name,
                    arguments=call.arguments[:PREVIEW_CHARS],
                    ok=result.ok,
                    error_kind=result.error_kind,
                    preview=result.content[:PREVIEW_CHARS],
                )
            )
            content = result.content if result.ok else f"ERROR ({result.error_kind}): {result.content}"
            conversation.append({"role": "tool", "tool_call_id": call.id, "content": content})
