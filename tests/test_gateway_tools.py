"""Tool calling goes through the gateway's one reliable path: retries, fallback, breaker,
budget, cache and a trace row per step, as structured answers do."""

from __future__ import annotations

import pytest

from resources import BudgetExceededError, StructuredOutputError
from tests.conftest import gateway
from tests.fake_openai import TOOLS, FakeOpenAI, Fault

pytestmark = pytest.mark.integration

SEARCH = {
    "type": "function",
    "function": {
        "name": "search_help_centre",
        "description": "Search the help centre.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}
CONVERSATION = [{"role": "user", "content": "How do I export my notes?"}]


def calls_search(messages):
    return {"tool_calls": [{"name": "search_help_centre", "arguments": {"query": "export"}}]}


def test_a_tool_call_is_retried_then_falls_back_and_is_traced(llm: FakeOpenAI, second_llm: FakeOpenAI, tmp_path):
    llm.persistent_fault = Fault(status=503, retry_after=0)
    second_llm.scripts[TOOLS] = calls_search
    model = gateway(llm, second_llm, trace_path=str(tmp_path / "traces.sqlite"), strong_model="first-strong")
    session = model.open_session(run_id="r", asset="reply_drafts")
    step = session.tool_step(CONVERSATION, [SEARCH], tier="fast")
    assert [(c.name, c.arguments) for c in step.turn.tool_calls] == [("search_help_centre", '{"query": "export"}')]
    assert llm.requests == 3, "two retries on the primary before falling back"
    assert second_llm.calls[0]["tools"] == [SEARCH]
    records = session.ledger.records
    assert [r.endpoint for r in records] == ["primary", "secondary"] and records[1].fallback
    [trace] = session.trace_records([step.trace_id])
    assert "search_help_centre" in str(trace["response"])


def test_an_unchanged_conversation_replays_its_tool_step_from_cache(llm: FakeOpenAI, tmp_path):
    llm.scripts[TOOLS] = calls_search
    session = gateway(llm, cache_path=str(tmp_path / "cache.sqlite")).open_session()
    first = session.tool_step(CONVERSATION, [SEARCH])
    again = session.tool_step(CONVERSATION, [SEARCH])
    assert again.cache_hit and again.turn == first.turn and llm.calls_for(TOOLS) == 1


def test_an_empty_assistant_message_is_reasked(llm: FakeOpenAI):
    answers = iter([{"content": "", "tool_calls": []}, {"content": "Settings, then Export.", "tool_calls": []}])
    llm.scripts[TOOLS] = lambda messages: next(answers)
    step = gateway(llm).open_session().tool_step(CONVERSATION, [SEARCH])
    assert step.turn.content == "Settings, then Export." and llm.calls_for(TOOLS) == 2
    llm.scripts[TOOLS] = lambda messages: {"content": "", "tool_calls": []}
    with pytest.raises(StructuredOutputError, match="neither text nor a tool call"):
        gateway(llm, max_reasks=1).open_session().tool_step(
            CONVERSATION + [{"role": "user", "content": "again"}], [SEARCH]
        )


def test_the_budget_stops_tool_steps_too(llm: FakeOpenAI):
    llm.scripts[TOOLS] = calls_search
    session = gateway(llm, budget_tokens=5).open_session()
    session.tool_step(CONVERSATION, [SEARCH])
    with pytest.raises(BudgetExceededError):
        session.tool_step(CONVERSATION + [{"role": "user", "content": "more"}], [SEARCH])
