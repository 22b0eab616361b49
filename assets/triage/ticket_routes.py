"""Routing: each ticket to the branch that can answer it, at the cheapest tier that is sure
and has proved itself.

The first tier is semantic: the labelled example tickets nearest to the ticket by
embedding (resources/support/semantic_router.py) decide when one intent clearly beats the
runner-up; it needs no model, so the offline default routes well without a capable one.
Otherwise the `fast`-tier classifier is asked, and a confident answer decides. Still
unsure, a vote: the semantic router's best guess, the fast tier, the fast tier with its
labels listed in another order, and the `strong` tier with yet another order. A vote
counts only voters measured to fail independently (resources/support/route_evaluation.py): three
samples of one model with one prompt are one opinion, and a model that answers its first
label disagrees with itself once the labels are reordered. Then the strong tier alone, and
last a person. Every tier is measured on a labelled sample first, and a tier under
`min_route_accuracy` decides nothing. Screening outranks them all: an abusive ticket gets
no reply. Every decision is recorded with who made it and why; the metadata holds each
tier's measured accuracy, the routing's accuracy against the desk's labels, and the
routing's cost against sending every ticket to the `strong` tier.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

from dagster import AssetKey, DagsterInstance, MetadataValue, Output
from pydantic import BaseModel, Field, create_model

from assets.components.llm_asset import LlmAsset, LlmCall, LlmRun
from assets.components.partitions import TICKETS
from assets.triage.ticket_screening import ScreenedTicket
from assets.triage.tickets import Ticket
from resources import EmbeddingsResource, ModelCallError, ModelSession, Tier
from resources.gateway.config import GatewayConfig
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import TriageConfig
from resources.support.route_evaluation import (
    LabelledRequest,
    TierAccuracy,
    desk_labels,
    independent_voters,
    labelled_sample,
    measure,
    measurement_key,
    model_sample,
    routing_examples,
    sample_hash,
)
from resources.support.semantic_router import SemanticRoute, SemanticRouter
from resources.support.triage_prompts import ticket_block, user
from resources.tables import from_frame, to_frame

Intent = Literal["billing", "bug", "how_to", "account", "abusive", "multi_part"]
INTENTS: tuple[str, ...] = get_args(Intent)
# What each label means, listed in the prompt in the voter's label order.
LABEL_GUIDE = {
    "billing": "charges, refunds, invoices, payments",
    "bug": "something in the product is broken",
    "how_to": "how to use a feature",
    "account": "login, password, two-factor, e-mail, deleting the account",
    "abusive": "insults or threats with no real request",
    "multi_part": "two or more distinct requests of different kinds in one ticket",
}
SEMANTIC = "semantic"
MEASUREMENTS = "route_measurements"


class TicketIntent(BaseModel):
    """The classifier's answer for one ticket."""

    intent: Intent
    difficulty: Literal["easy", "hard"]
    confidence: float = Field(ge=0, le=1)
    reason: str = Field(default="", max_length=200)


@lru_cache(maxsize=None)
def intent_schema(order: tuple[str, ...]) -> type[TicketIntent]:
    """`TicketIntent` with its labels in `order`: grammar-constrained servers list the enum as given."""
    if order == INTENTS:
        return TicketIntent
    return create_model("TicketIntent", __base__=TicketIntent, intent=(Literal[order], ...))  # type: ignore[valid-type]


@dataclass(frozen=True)
class ModelVoter:
    """One way of asking a model tier: the tier and the order its labels are listed in."""

    name: str
    tier: Tier
    order: tuple[str, ...]

    def messages(self, call: LlmCall, title: str, text: str) -> list[dict[str, str]]:
        labels = "\n".join(f"  - {label}: {LABEL_GUIDE[label]}" for label in self.order)
        return user(call.prompt.render(labels=labels, ticket=ticket_block(title, text)))

    def identity(self, config: GatewayConfig, call: LlmCall) -> str:
        """Same identity = same model asked the same way: one opinion however often it is asked."""
        return measurement_key(
            config.chain()[0].base_url, config.model_for(self.tier), call.prompt.version, LABEL_GUIDE, self.order
        )


FAST = ModelVoter("fast", "fast", INTENTS)
FAST_REORDERED = ModelVoter("fast_reordered", "fast", tuple(reversed(INTENTS)))
STRONG = ModelVoter("strong", "strong", INTENTS[2:] + INTENTS[:2])
MODEL_VOTERS = (FAST, FAST_REORDERED, STRONG)


class TicketRoute(BaseModel):
    ticket: str
    ticket_id: str = ""
    intent: str = Field(
        description="The branch: billing, bug, how_to, account, abusive, multi_part, or none (quarantined)."
    )
    difficulty: str = ""
    confidence: float = 0.0
    decided_by: Literal["semantic", "classifier", "vote", "strong", "screening", "person", "none"] = Field(
        description="semantic: the nearest labelled examples; classifier: the fast tier, confident at once; vote: "
        "a majority of independent voters; strong: the strong tier; screening: abusive; person: unsure after all "
        "the trusted tiers, or they failed."
    )
    needs_person: bool = False
    reason: str = ""
    votes: list[str] = Field(default=[], description="voter=intent for each voter counted, when there was a vote.")
    calls: int = Field(default=0, description="Classifier requests made for this ticket.")


@dataclass
class RoutingTiers:
    """The run's routing tiers with their measured accuracy: who may decide, and who votes."""

    router: SemanticRouter
    triage: TriageConfig
    llm: ModelSession  # the asset's session: each ticket's calls
    call: LlmCall  # the classifier's prompt and token budget, which every model voter uses
    sample: list[LabelledRequest]
    measured: dict[str, TierAccuracy] = field(default_factory=dict)
    earlier: dict[str, TierAccuracy] = field(default_factory=dict)  # from the asset's history, by tier
    remeasured: list[str] = field(default_factory=list)
    # Measuring calls are the tiers', not a ticket's: kept apart from the asset's per-ticket usage.
    measuring: ModelSession = field(init=False)

    def __post_init__(self) -> None:
        self.measuring = self.llm.beside("route_measuring")

    def _reusable(self, tier: str, key: str) -> TierAccuracy | None:
        """An earlier measurement under the same key, unless a model left items unanswered then
        (an outage): that one counted for its run, and is taken again."""
        before = self.earlier.get(tier)
        if before is not None and before.key == key and (tier == SEMANTIC or before.routed == before.items):
            return before
        return None

    def _reuse_or_measure(self, tier: str, key: str, items: Sequence[LabelledRequest], route: Any) -> None:
        """The tier's earlier measurement when `_reusable`, else its routes of `items` scored now."""
        before = self._reusable(tier, key)
        if before is not None:
            self.measured[tier] = before
            return
        self.measured[tier] = measure(tier, key, items, route)
        self.remeasured.append(tier)

    def measure_semantic(self) -> None:
        key = measurement_key(
            self.router.embeddings.model_id,
            self.router.margin,
            [e.model_dump() for e in routing_examples()],
            sample_hash(self.sample),
        )

        def route(items: Sequence[LabelledRequest]) -> list[str]:
            routes = self.router.route([i.text for i in items], [i.title or i.text for i in items])
            return [r.intent if r.decided else "" for r in routes]

        self._reuse_or_measure(SEMANTIC, key, self.sample, route)

    def measure_models(self) -> None:
        """Each model voter on the small stratified sample, unless measured under the same key before.

        The voters to measure are asked together, every item of every voter in one pool: the
        gateway's slots stay full across voters, instead of each voter's last few items being
        awaited before the next voter starts."""
        items = model_sample(self.sample)
        keys = {
            voter.name: measurement_key(
                voter.identity(self.llm.config, self.call), self.call.max_tokens, sample_hash(items)
            )
            for voter in MODEL_VOTERS
            if voter.name not in self.measured
        }
        asked = [
            (voter, item)
            for voter in MODEL_VOTERS
            if voter.name in keys and self._reusable(voter.name, keys[voter.name]) is None
            for item in items
        ]

        def ask(pair: tuple[ModelVoter, LabelledRequest]) -> str:
            voter, item = pair
            return self.ask(voter, item.title or item.text, item.text, item.key, self.measuring)[0]

        with ThreadPoolExecutor(max_workers=max(1, self.llm.config.max_concurrency)) as pool:
            answers = dict(zip(((voter.name, item.key) for voter, item in asked), pool.map(ask, asked)))
        for name, key in keys.items():

            def route(chosen: Sequence[LabelledRequest], name: str = name) -> list[str]:
                return [answers[(name, item.key)] for item in chosen]

            self._reuse_or_measure(name, key, items, route)

    def ask(
        self, voter: ModelVoter, title: str, text: str, partition: str, session: ModelSession | None = None
    ) -> tuple[str, TicketIntent | None]:
        """The voter's intent ('' when the call failed) and its whole answer."""
        try:
            answer, _ = (session or self.llm).traced_structured(
                voter.messages(self.call, title, text),
                intent_schema(voter.order),
                tier=voter.tier,
                max_tokens=self.call.max_tokens,
                partition=partition,
            )
        except ModelCallError:
            return "", None
        return answer.intent, answer

    def trusted(self, tier: str) -> bool:
        measured = self.measured.get(tier)
        return measured is not None and measured.routed > 0 and measured.accuracy >= self.triage.min_route_accuracy

    def voters(self) -> tuple[list[str], dict[str, str]]:
        """The trusted voters that count (independent), and the ones merged into another."""
        trusted = {name: m for name, m in self.measured.items() if self.trusted(name)}
        identities = {v.name: v.identity(self.llm.config, self.call) for v in MODEL_VOTERS}
        return independent_voters(trusted, self.sample, identities)

    def report(self) -> dict[str, dict[str, Any]]:
        counted, merged = self.voters()
        return {
            name: {
                "desk": m.desk,
                "public": m.public,
                "accuracy": m.accuracy,
                "routed": m.routed,
                "items": m.items,
                "trusted": self.trusted(name),
                "votes": name in counted,
                **({"same_opinion_as": merged[name]} if name in merged else {}),
                "measured_this_run": name in self.remeasured,
            }
            for name, m in self.measured.items()
        }


def classify(ticket: Ticket, semantic: SemanticRoute, tiers: RoutingTiers) -> TicketRoute:
    """The route of one received ticket the semantic tier did not settle: the fast tier, a vote
    of independent trusted voters, the strong tier, then a person."""
    base = dict(ticket=ticket.ticket, ticket_id=ticket.ticket_id)
    floor = tiers.triage.min_route_confidence
    answers: dict[str, TicketIntent | None] = {}
    calls = 0

    def ask(voter: ModelVoter) -> TicketIntent | None:
        nonlocal calls
        if voter.name not in answers:
            calls += 1
            answers[voter.name] = tiers.ask(voter, ticket.subject, ticket.body, ticket.ticket)[1]
        return answers[voter.name]

    def decided(answer: TicketIntent, by: str, reason: str, votes: list[str]) -> TicketRoute:
        """The route a tier's own answer settles: its intent, difficulty and confidence."""
        return TicketRoute(
            **base,
            intent=answer.intent,
            difficulty=answer.difficulty,
            confidence=answer.confidence,
            decided_by=by,
            votes=votes,
            calls=calls,
            reason=reason,
        )

    why = [f"semantic: {semantic.reason}"]
    if tiers.trusted(FAST.name):
        first = ask(FAST)
        if first is not None and first.confidence >= floor:
            return decided(first, "classifier", first.reason, votes=[])
        why.append(f"fast: {first.intent} at {first.confidence:.2f}" if first else "fast: failed")
    else:
        why.append("fast tier not trusted")

    counted, _ = tiers.voters()
    votes: dict[str, str] = {}
    for name in counted:
        if name == SEMANTIC:
            votes[name] = semantic.intent
            continue
        voter = next(v for v in MODEL_VOTERS if v.name == name)
        answer = ask(voter)
        if answer is not None:
            votes[name] = answer.intent
    listed = [f"{name}={intent}" for name, intent in votes.items()]
    if len(votes) >= 2:
        winner, count = Counter(votes.values()).most_common(1)[0]
        if count >= 2 and count * 2 > len(votes):
            agreeing = [answers[n] for n, i in votes.items() if i == winner and answers.get(n) is not None]
            return TicketRoute(
                **base,
                intent=winner,
                difficulty=agreeing[0].difficulty if agreeing else "",
                confidence=round(count / len(votes), 3),
                decided_by="vote",
                votes=listed,
                calls=calls,
                reason=f"{count} of {len(votes)} independent voters agree",
            )
        why.append(f"vote {dict(Counter(votes.values()))} not decisive")
    else:
        why.append(f"{len(votes)} independent trusted voter(s): no vote")

    strong = ask(STRONG) if tiers.trusted(STRONG.name) else None
    if strong is not None and strong.confidence >= floor:
        reason = "; ".join(why + [f"strong tier: {strong.intent} at {strong.confidence:.2f}"])[:300]
        return decided(strong, "strong", reason, votes=listed)
    why.append("strong tier " + ("not trusted" if not tiers.trusted(STRONG.name) else "unsure or failed"))
    guess = strong or answers.get(FAST.name)
    return TicketRoute(
        **base,
        intent=guess.intent if guess else semantic.intent,
        difficulty=guess.difficulty if guess else "",
        confidence=guess.confidence if guess else 0.0,
        decided_by="person",
        needs_person=True,
        votes=listed,
        calls=calls,
        reason=("; ".join(why) + ": a person decides")[:300],
    )


def route_tickets(
    tickets: list[Ticket], screenings: dict[str, ScreenedTicket], tiers: RoutingTiers
) -> list[TicketRoute]:
    """Screening and quarantine first; the semantic tier for every received ticket at once;
    the model tiers (measured only when a ticket needs them) for the rest."""
    routes: dict[str, TicketRoute] = {}
    received = []
    for ticket in tickets:
        base = dict(ticket=ticket.ticket, ticket_id=ticket.ticket_id)
        screening = screenings.get(ticket.ticket)
        if ticket.status != "received":
            routes[ticket.ticket] = TicketRoute(
                **base, intent="none", decided_by="none", reason=f"quarantined: {ticket.quarantine_reason}"
            )
        elif screening is not None and screening.abusive:
            routes[ticket.ticket] = TicketRoute(
                **base,
                intent="abusive",
                decided_by="screening",
                confidence=1.0,
                reason="; ".join(r for r in screening.reasons if "abuse" in r or "classifier" in r)[:300],
            )
        else:
            received.append(ticket)
    semantic = dict(
        zip((t.ticket for t in received), tiers.router.route([t.body for t in received], [t.subject for t in received]))
    )
    undecided = []
    for ticket in received:
        verdict = semantic[ticket.ticket]
        if verdict.decided and tiers.trusted(SEMANTIC):
            routes[ticket.ticket] = TicketRoute(
                ticket=ticket.ticket,
                ticket_id=ticket.ticket_id,
                intent=verdict.intent,
                confidence=round(min(1.0, verdict.margin / tiers.router.margin / 2), 3) if tiers.router.margin else 1.0,
                decided_by="semantic",
                reason=verdict.reason[:300],
            )
        else:
            undecided.append(ticket)
    if undecided:
        tiers.measure_models()
        with ThreadPoolExecutor(max_workers=max(1, tiers.llm.config.max_concurrency)) as pool:
            for row in pool.map(lambda t: classify(t, semantic[t.ticket], tiers), undecided):
                routes[row.ticket] = row
    return [routes[t.ticket] for t in tickets]


def earlier_measurements(instance: DagsterInstance, asset: str) -> dict[str, TierAccuracy]:
    """The tiers' measurements the asset's latest materialization recorded, to reuse while their keys hold."""
    event = instance.get_latest_materialization_event(AssetKey(asset))
    materialization = event.asset_materialization if event is not None else None
    if materialization is None or MEASUREMENTS not in materialization.metadata:
        return {}
    recorded = materialization.metadata[MEASUREMENTS].value
    if not isinstance(recorded, dict):
        return {}
    return {tier: TierAccuracy.model_validate(value) for tier, value in recorded.items()}


def routing_tiers(
    llm: ModelSession,
    embeddings: EmbeddingsResource,
    triage: TriageConfig,
    call: LlmCall,
    earlier: dict[str, TierAccuracy] | None = None,
) -> RoutingTiers:
    """The run's tiers, with the semantic tier measured (cheap: embeddings only)."""
    tiers = RoutingTiers(
        router=SemanticRouter(routing_examples(), embeddings, triage.semantic_route_margin),
        triage=triage,
        llm=llm,
        call=call,
        sample=labelled_sample(),
        earlier=earlier or {},
    )
    tiers.measure_semantic()
    return tiers


def route(run: LlmRun) -> Output:
    """The body of `ticket_routes`: every ticket through the routing tiers, cheapest first."""
    screenings = {s.ticket: s for s in from_frame(run.inputs["ticket_screening"], ScreenedTicket)}
    tickets = from_frame(run.inputs["support_tickets"], Ticket)
    tiers = routing_tiers(
        run.llm,
        run.resource("vector_store").embeddings,
        run.resource("triage"),
        run.call,
        earlier_measurements(run.context.instance, ROUTES.name),
    )
    rows = route_tickets(tickets, screenings, tiers)
    return Output(to_frame(rows, TicketRoute), metadata=routing_metadata(rows, tiers))


# The fast-tier classifier as `route` first asks it; the voters ask the same prompt with their
# own label orders and tiers.
CLASSIFIER = LlmCall(
    prompt_file=Path(__file__).parent / "prompts" / "route_ticket.txt",
    answer=TicketIntent,
    tier="fast",
    max_tokens=160,
    compare_tiers=True,
)
ROUTES = LlmAsset(
    name="ticket_routes",
    group="triage_routing",
    description="Each ticket's branch (intent), who decided it (semantic router, classifier, vote, strong tier, "
    "screening, person) and why, with each routing tier's measured accuracy.",
    call=CLASSIFIER,
    rows=TicketRoute,
    ins=("support_tickets", "ticket_screening"),
    partitions=TICKETS,
    resources={"triage", "vector_store"},
    version=2,  # bump when the routing changes what it stores
)
ticket_routes = ROUTES.asset(route)


def accuracy_against_labels(rows: list[TicketRoute], labels: dict[str, str]) -> dict[str, Any]:
    """The routes of the run's bundled tickets against the desk's expected labels: right means
    decided (not handed to a person) and equal to the label."""
    labelled = [r for r in rows if r.ticket == f"samples/{r.ticket_id}.json" and r.ticket_id in labels]
    right = sum(not r.needs_person and r.intent == labels[r.ticket_id] for r in labelled)
    to_person = sum(r.needs_person for r in labelled)
    return {
        "labelled": len(labelled),
        "right": right,
        "to_person": to_person,
        "accuracy": round(right / len(labelled), 3) if labelled else None,
        "to_person_share": round(to_person / len(labelled), 3) if labelled else None,
    }


def routing_metadata(rows: list[TicketRoute], tiers: RoutingTiers) -> dict[str, object]:
    """The routing's figures; the model session adds usage and the cost against the strong tier."""
    return {
        "tickets": len(rows),
        "routing_mix": MetadataValue.json(dict(Counter(r.intent for r in rows))),
        "decided_by": MetadataValue.json(dict(Counter(r.decided_by for r in rows))),
        "votes": sum(r.decided_by == "vote" for r in rows),
        "escalated_to_strong": sum(r.decided_by == "strong" or (r.needs_person and r.calls > 1) for r in rows),
        "escalated_to_person": sum(r.needs_person for r in rows),
        "routing_accuracy": MetadataValue.json(
            {
                "against_desk_labels": accuracy_against_labels(rows, desk_labels()),
                "tiers": tiers.report(),
                "floor": tiers.triage.min_route_accuracy,
                "measuring_requests": len(tiers.measuring.ledger.records),
            }
        ),
        MEASUREMENTS: MetadataValue.json({name: m.model_dump() for name, m in tiers.measured.items()}),
        # Counted once per run by the run's usage (ai_pipelines.run_report.MEASURING_KEYS).
        "route_measuring_requests": tiers.measuring.ledger.summary().requests,
        "route_measuring_cache_hits": tiers.measuring.ledger.summary().cache_hits,
        "preview": MetadataValue.md(
            markdown_table(
                [
                    {
                        "ticket": r.ticket,
                        "intent": r.intent,
                        "confidence": r.confidence,
                        "decided_by": r.decided_by,
                        "reason": r.reason[:120],
                    }
                    for r in rows[:20]
                ]
            )
        ),
    }
