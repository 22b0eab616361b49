"""The orchestration patterns of support triage, one at a time, through the real gateway
and the fake model server over HTTP: voting and escalation, the agent's caps, tool
errors, refinement's cap, and memory beyond its budget."""

from __future__ import annotations

import itertools
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from assets.triage.ticket_routes import CLASSIFIER, MODEL_VOTERS, SEMANTIC, RoutingTiers, classify, routing_tiers
from assets.triage.tickets import Ticket
from resources import ModelResource
from resources.embeddings import EmbeddingsResource
from resources.pipeline_config import SUPPORT_DESK_DIR, TriageConfig
from resources.support import conversation_memory
from resources.support.agent import AgentLimits, AgentRun, run_agent
from resources.support.conversation_memory import ConversationMemory, Turn
from resources.support.reply_refinement import refine
from resources.support.route_evaluation import DESK_TICKETS, routing_examples, score
from resources.support.semantic_router import SemanticRouter, requests_of
from resources.support.support_desk import SupportDeskResource
from resources.vector_store import VectorStoreResource
from tests.fake_openai import TOOLS, FakeOpenAI
from tests.fake_triage import summarize_history

# Tiers, marked per test: everything calls the fake model server (integration) but the check of the fake's own helper (unit).

TICKET = Ticket(
    ticket="samples/T005.json",
    ticket_id="T005",
    customer_id="C003",
    subject="Refund for my yearly plan",
    body="Please refund order O1039, I bought the wrong plan.",
    received_at="2026-11-21T10:00:00Z",
    content_hash="x",
    status="received",
)


def model_on(llm: FakeOpenAI, tmp_path) -> ModelResource:
    return ModelResource(
        base_url=llm.base_url,
        fast_model="fake-fast",
        strong_model="fake-strong",
        cache_path=str(tmp_path / "cache.sqlite"),
        max_retries=0,
    )


def desk(llm: FakeOpenAI, tmp_path) -> SupportDeskResource:
    store = VectorStoreResource(
        embeddings=EmbeddingsResource(base_url=llm.base_url, model="fake-embedder"),
        persist_dir=str(tmp_path / "chroma"),
    )
    return SupportDeskResource(data_dir=str(SUPPORT_DESK_DIR), vector_store=store)


def agent_run(llm: FakeOpenAI, tmp_path, limits: AgentLimits) -> AgentRun:
    """The reply agent asked for help by customer C003 on 2026-11-21, within `limits`."""
    return run_agent(
        model_on(llm, tmp_path).open_session(),
        [{"role": "user", "content": "help"}],
        desk(llm, tmp_path).toolbox("C003", "2026-11-21"),
        limits,
    )


def proven_tiers(llm: FakeOpenAI, tmp_path) -> RoutingTiers:
    """Routing tiers whose measurements (given here) found every tier right on its sample,
    so each is trusted and no two fail together; the semantic tier never decides alone."""
    triage = TriageConfig(semantic_route_margin=1.0)
    embeddings = EmbeddingsResource(base_url=llm.base_url, model="fake-embedder")
    tiers = routing_tiers(model_on(llm, tmp_path).open_session(), embeddings, triage, CLASSIFIER)
    right = {item.key: item.intent for item in tiers.sample}
    for name in (SEMANTIC, *(v.name for v in MODEL_VOTERS)):
        tiers.measured[name] = score(name, "given", tiers.sample, right)
    return tiers


@pytest.mark.integration
def test_an_unsure_route_goes_to_a_vote_then_the_strong_tier_then_a_person(llm: FakeOpenAI, tmp_path):
    intents = itertools.cycle(["billing", "account", "how_to"])
    llm.scripts["TicketIntent"] = lambda m: {
        "intent": next(intents),
        "difficulty": "hard",
        "confidence": 0.4,
        "reason": "unsure",
    }
    tiers = proven_tiers(llm, tmp_path)
    semantic = tiers.router.route([TICKET.body], [TICKET.subject])[0]
    route = classify(TICKET, semantic, tiers)
    assert route.decided_by == "person" and route.needs_person
    assert len(route.votes) == 4 and route.calls == 3, "the semantic router and three model voters, each asked once"
    assert "vote" in route.reason and "strong tier" in route.reason
    assert [c["model"] for c in llm.calls] == ["fake-fast", "fake-fast", "fake-strong"]
    first_labels = [re.search(r"^  - (\w+):", c["messages"][0]["content"], flags=re.M).group(1) for c in llm.calls]
    assert len(set(first_labels)) == 3, "each model voter lists the labels in another order"


@pytest.mark.integration
def test_a_vote_settles_a_route_the_first_answer_was_unsure_of(llm: FakeOpenAI, tmp_path):
    answers = iter([0.5, 0.9, 0.8])
    llm.scripts["TicketIntent"] = lambda m: {
        "intent": "billing",
        "difficulty": "easy",
        "confidence": next(answers),
        "reason": "",
    }
    tiers = proven_tiers(llm, tmp_path)
    route = classify(TICKET, tiers.router.route([TICKET.body], [TICKET.subject])[0], tiers)
    assert (route.decided_by, route.intent, route.calls, route.needs_person) == ("vote", "billing", 3, False)


@pytest.mark.integration
def test_the_agent_stops_at_its_iteration_cap(llm: FakeOpenAI, tmp_path):
    llm.scripts[TOOLS] = lambda m: {"tool_calls": [{"name": "search_help_centre", "arguments": {"query": "refund"}}]}
    run = agent_run(llm, tmp_path, AgentLimits(max_iterations=3, max_tool_calls=50))
    assert run.status == "stopped" and run.reason.startswith("iteration cap")
    assert run.iterations == 3 and run.tool_calls == 3 and llm.calls_for(TOOLS) == 3


@pytest.mark.integration
def test_the_agent_stops_at_its_tool_call_cap(llm: FakeOpenAI, tmp_path):
    llm.scripts[TOOLS] = lambda m: {"tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "O1039"}}] * 4}
    run = agent_run(llm, tmp_path, AgentLimits(max_iterations=10, max_tool_calls=6))
    assert run.status == "stopped" and run.reason.startswith("tool-call cap")
    assert run.tool_calls == 6 and run.iterations == 2


@pytest.mark.integration
def test_a_tool_error_goes_back_to_the_model_and_the_agent_goes_on(llm: FakeOpenAI, tmp_path):
    seen = []

    def script(messages):
        results = [m["content"] for m in messages if m.get("role") == "tool"]
        if not results:
            return {
                "tool_calls": [
                    {"name": "delete_all_orders", "arguments": {}},
                    {"name": "lookup_order", "arguments": {"order_id": "O1041"}},  # another customer's order
                    {"name": "lookup_order", "arguments": "{not json"},
                ]
            }
        seen.extend(results)
        return {"content": "Sorry, I could only check your own orders. (help centre: refund-policy)", "tool_calls": []}

    llm.scripts[TOOLS] = script
    run = agent_run(llm, tmp_path, AgentLimits())
    assert run.status == "answered" and run.tool_errors == 3
    assert [s.error_kind for s in run.steps if s.kind == "tool"] == ["unknown_tool", "tool_error", "invalid_arguments"]
    assert "unknown tool 'delete_all_orders'" in seen[0] and "does not belong" in seen[1]


@pytest.mark.integration
def test_refinement_stops_at_its_round_cap_and_records_every_round(llm: FakeOpenAI, tmp_path):
    llm.scripts["RubricCritique"] = lambda m: {
        "answers_question": True,
        "cites_help_centre": True,
        "follows_policy": True,
        "polite": False,
        "feedback": "Be kinder.",
    }
    session = model_on(llm, tmp_path).open_session()
    reply, rounds, passed = refine(
        "No.",
        ticket_block="<ticket>\nSubject: x\n\nrefund?\n</ticket>",
        context_block="<context>\n[refund-policy] Refunds: within 30 days.\n</context>",
        known_slugs=["refund-policy"],
        refund_limit=250,
        max_rounds=2,
        llm=session,
        partition="p",
    )
    assert not passed and len(rounds) == 3
    assert [r.revised for r in rounds] == [True, True, False]
    assert rounds[0].failed == ["polite", "cites_help_centre"], "the citation is also checked by code"
    assert rounds[1].failed == rounds[2].failed == ["polite"]
    tiers = [r.tier for r in session.ledger.records]
    assert tiers == ["fast", "strong", "fast", "strong", "fast"], (
        "critique, revise, critique, revise, critique: then the cap"
    )
    assert "(help centre: refund-policy)" in reply


@pytest.mark.integration
def test_memory_summarizes_what_exceeds_the_budget_once(llm: FakeOpenAI, tmp_path):
    memory = ConversationMemory(tmp_path / "memory.sqlite")
    for n in range(12):
        memory.remember(
            Turn(
                turn_id=f"t{n}",
                customer_id="C003",
                ticket=f"samples/T{n:03}.json",
                role="customer" if n % 2 == 0 else "agent",
                text=f"Message number {n} about the sync of my notebook and an invoice question. " * 3,
                at=f"2026-11-{n + 1:02}T10:00:00Z",
            )
        )
    session = model_on(llm, tmp_path).open_session()

    def summarize(previous, turns):
        prompt = f"<history>\nSummary so far: {previous}\n" + "\n".join(t.line for t in turns) + "\n</history>"
        return session.structured(
            [{"role": "user", "content": prompt}],
            __import__("assets.triage.ticket_context", fromlist=["HistorySummary"]).HistorySummary,
        ).summary

    recall = memory.recall("C003", budget_chars=1200, window_turns=4, summarize=summarize)
    assert recall.total_turns == 12 and len(recall.window) <= 4
    assert recall.summarized_turns == 12 - len(recall.window) and recall.dropped_turns == 0
    assert recall.summary.startswith("Earlier:") and len(recall.text()) <= 1200 + 1000
    assert llm.calls_for("HistorySummary") == 1
    again = memory.recall("C003", budget_chars=1200, window_turns=4, summarize=summarize)
    assert again.summary == recall.summary and llm.calls_for("HistorySummary") == 1, "older turns are summarized once"
    unable = ConversationMemory(tmp_path / "other.sqlite")
    for turn in memory.turns("C003"):
        unable.remember(turn)
    dropped = unable.recall("C003", budget_chars=1200, window_turns=4, summarize=lambda previous, turns: None)
    assert dropped.dropped_turns == 12 - len(dropped.window) and dropped.summary == ""


@pytest.mark.unit
def test_the_fake_history_summary_reads_the_history_block():
    assert summarize_history([{"role": "user", "content": "<history>\n[2026-11-01] customer: hello\n</history>"}])[
        "summary"
    ].startswith("Earlier")


@pytest.mark.unit
def test_turns_remembered_together_are_the_turns_remembered_one_by_one(tmp_path, monkeypatch):
    monkeypatch.setattr(conversation_memory, "TURNS_PER_STATEMENT", 2)  # several statements for five turns
    turns = [
        Turn(
            turn_id=f"samples/T{n:03}.json#c",
            customer_id="C003" if n % 2 else "C011",
            ticket=f"samples/T{n:03}.json",
            role="customer",
            text=f"Question {n}",
            at=f"2026-11-{n + 1:02}T10:00:00Z",
        )
        for n in range(5)
    ]
    edited = turns[0].model_copy(update={"text": "Question 0, edited"})
    one_by_one = ConversationMemory(tmp_path / "one.sqlite")
    for turn in [*turns, edited]:
        one_by_one.remember(turn)
    together = ConversationMemory(tmp_path / "together.sqlite")
    together.remember_many([*turns, edited])  # the same turn twice in one call: its last version
    together.remember_many(turns[1:3])  # again: idempotent
    together.remember_many([])
    for customer in ("C003", "C011"):
        assert together.turns(customer) == one_by_one.turns(customer)
    assert together.turns("C011")[0].text == "Question 0, edited"


@pytest.mark.integration
def test_within_a_block_each_distinct_help_centre_question_is_searched_once(llm: FakeOpenAI, tmp_path, monkeypatch):
    support = desk(llm, tmp_path)
    searched: list[str] = []
    query = VectorStoreResource.query

    def counted(self, name, texts, *args, **kwargs):
        searched.extend(texts)
        return query(self, name, texts, *args, **kwargs)

    monkeypatch.setattr(VectorStoreResource, "query", counted)
    first, second = (support.search_help_centre("I forgot my password", 2) for _ in range(2))
    assert searched == ["I forgot my password"] * 2, "outside a block every search reads the index"
    searched.clear()
    questions = ["I forgot my password", "export notebooks as PDF", "refund of my order"]
    with support.memoized_searches():
        with ThreadPoolExecutor(max_workers=6) as pool:
            inside = list(pool.map(lambda q: support.search_help_centre(q, 2), questions * 4))
        together = support.search_help_centre_many([*questions, questions[0]], 2)
        assert [h.slug for h in support.search_help_centre(questions[0], 1)] == [first[0].slug]
    assert sorted(searched) == sorted([*questions, questions[0]]), "each question once at limit 2, and once at 1"
    assert inside[:3] == together[:3] and together[3] == first == second
    searched.clear()
    support.search_help_centre(questions[0], 2)
    assert searched == [questions[0]], "the block is over: the index is read again"


@pytest.mark.integration
def test_tickets_routed_together_are_routed_as_each_one_alone(llm: FakeOpenAI):
    router = SemanticRouter(
        routing_examples(),
        EmbeddingsResource(base_url=llm.base_url, model="fake-embedder"),
        TriageConfig().semantic_route_margin,
    )
    tickets = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(DESK_TICKETS.glob("T*.json"))]
    requests = llm.embedding_requests
    together = router.route([t["body"] for t in tickets], [t["subject"] for t in tickets])
    assert llm.embedding_requests - requests < len(tickets), "the tickets' requests are embedded together"
    alone = [router.route([t["body"]], [t["subject"]])[0] for t in tickets]
    assert [(r.intent, r.decided, r.requests) for r in together] == [(r.intent, r.decided, r.requests) for r in alone]
    assert any(requests_of(t["body"]) for t in tickets), "some tickets hold requests, routed one by one too"
