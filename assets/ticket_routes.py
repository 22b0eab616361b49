"""Routing: each ticket to the branch that can answer it, at the cheapest tier that is sure.

A `fast`-tier classifier names the intent, difficulty and its confidence. A confident
answer decides. An unsure one goes to a vote of three samples of the same classifier
(asked at once, at a sampling temperature, each sample cached apart): a majority that is confident on
average decides. Still unsure, the `strong` tier classifies; if even it is unsure, the
ticket goes to a person. Screening outranks them all: an abusive ticket gets no reply.
Every decision is recorded with who made it and why, and the metadata compares the
routing's cost with sending every ticket to the `strong` tier.
"""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from dagster import MetadataValue, Output
from pydantic import BaseModel, Field

from assets.config import TriageConfig
from assets.llm_step import LlmStep, StepRun
from assets.ticket_screening import ScreenedTicket
from assets.tickets import Ticket
from assets.triage_prompts import ticket_block, user
from resources import CallLedger, ModelCallError, ModelResource
from resources.markdown_tables import markdown_table
from resources.tables import from_frame, to_frame

Intent = Literal["billing", "bug", "how_to", "account", "abusive", "multi_part"]
VOTE_TEMPERATURE = 0.7


class TicketIntent(BaseModel):
    """The classifier's answer for one ticket."""

    intent: Intent
    difficulty: Literal["easy", "hard"]
    confidence: float = Field(ge=0, le=1)
    reason: str = Field(default="", max_length=200)


class TicketRoute(BaseModel):
    ticket: str
    ticket_id: str = ""
    intent: str = Field(
        description="The branch: billing, bug, how_to, account, abusive, multi_part, or none (quarantined)."
    )
    difficulty: str = ""
    confidence: float = 0.0
    decided_by: Literal["classifier", "vote", "strong", "screening", "person", "none"] = Field(
        description="classifier: confident at once; vote: a majority of samples; strong: the strong tier; "
        "screening: abusive; person: unsure after all of them, or the classifier failed."
    )
    needs_person: bool = False
    reason: str = ""
    votes: list[str] = Field(default=[], description="The intents of the vote's samples, when there was a vote.")
    calls: int = Field(default=0, description="Classifier requests made for this ticket.")


def classify(
    model: ModelResource, ticket: Ticket, triage: TriageConfig, ledger: CallLedger, step: LlmStep
) -> TicketRoute:
    """The route of one received ticket, escalating from one call of the declared classifier
    (assets/steps/ticket_routes) to a vote to the strong tier."""
    messages = user(step.prompt_template.render(ticket=ticket_block(ticket.subject, ticket.body)))
    schema = step.answer_model
    ask = dict(max_tokens=step.max_tokens, ledger=ledger, partition=ticket.ticket)
    base = dict(ticket=ticket.ticket, ticket_id=ticket.ticket_id)
    try:
        first, _ = model.traced_structured(messages, schema, tier=step.tier, **ask)
    except ModelCallError as exc:
        return TicketRoute(
            **base,
            intent="none",
            decided_by="person",
            needs_person=True,
            calls=1,
            reason=f"classifier failed: {exc}"[:300],
        )
    if first.confidence >= triage.min_route_confidence:
        return TicketRoute(
            **base,
            intent=first.intent,
            difficulty=first.difficulty,
            confidence=first.confidence,
            decided_by="classifier",
            reason=first.reason,
            calls=1,
        )

    def vote(sample: int) -> TicketIntent | None:
        try:
            return model.traced_structured(
                messages, schema, tier=step.tier, temperature=VOTE_TEMPERATURE, sample=sample, **ask
            )[0]
        except ModelCallError:
            return None

    with ThreadPoolExecutor(max_workers=triage.vote_samples) as voters:  # independent samples: asked at once
        samples = [s for s in voters.map(vote, range(1, triage.vote_samples + 1)) if s is not None]
    votes = [s.intent for s in samples]
    calls = 1 + triage.vote_samples
    if votes:
        winner, count = Counter(votes).most_common(1)[0]
        agreeing = [s for s in samples if s.intent == winner]
        mean = sum(s.confidence for s in agreeing) / len(agreeing)
        if count * 2 > len(votes) and count >= 2 and mean >= triage.min_route_confidence:
            return TicketRoute(
                **base,
                intent=winner,
                difficulty=agreeing[0].difficulty,
                confidence=round(mean, 3),
                decided_by="vote",
                votes=votes,
                calls=calls,
                reason=f"first answer {first.intent} at {first.confidence:.2f}; {count} of {len(votes)} samples agree",
            )
    why = f"first answer {first.intent} at {first.confidence:.2f}; vote {dict(Counter(votes)) or 'failed'} not decisive"
    try:
        strong, _ = model.traced_structured(messages, schema, tier="strong", **ask)
    except ModelCallError as exc:
        return TicketRoute(
            **base,
            intent=first.intent,
            difficulty=first.difficulty,
            confidence=first.confidence,
            decided_by="person",
            needs_person=True,
            votes=votes,
            calls=calls + 1,
            reason=f"{why}; strong tier failed: {exc}"[:300],
        )
    sure = strong.confidence >= triage.min_route_confidence
    return TicketRoute(
        **base,
        intent=strong.intent,
        difficulty=strong.difficulty,
        confidence=strong.confidence,
        decided_by="strong" if sure else "person",
        needs_person=not sure,
        votes=votes,
        calls=calls + 1,
        reason=f"{why}; strong tier: {strong.intent} at {strong.confidence:.2f}"
        + ("" if sure else ", still unsure: a person decides"),
    )


def route_tickets(
    tickets: list[Ticket],
    screenings: dict[str, ScreenedTicket],
    model: ModelResource,
    triage: TriageConfig,
    ledger: CallLedger,
    step: LlmStep,
) -> list[TicketRoute]:
    def one(ticket: Ticket) -> TicketRoute:
        base = dict(ticket=ticket.ticket, ticket_id=ticket.ticket_id)
        screening = screenings.get(ticket.ticket)
        if ticket.status != "received":
            return TicketRoute(
                **base, intent="none", decided_by="none", reason=f"quarantined: {ticket.quarantine_reason}"
            )
        if screening is not None and screening.abusive:
            return TicketRoute(
                **base,
                intent="abusive",
                decided_by="screening",
                confidence=1.0,
                reason="; ".join(r for r in screening.reasons if "abuse" in r or "classifier" in r)[:300],
            )
        return classify(model, ticket, triage, ledger, step)

    with ThreadPoolExecutor(max_workers=max(1, model.max_concurrency)) as pool:
        return list(pool.map(one, tickets))


def route(run: StepRun) -> Output:
    """The runner of the `ticket_routes` step (assets/steps/ticket_routes/defs.yaml)."""
    screenings = {s.ticket: s for s in from_frame(run.inputs["ticket_screening"], ScreenedTicket)}
    tickets = from_frame(run.inputs["support_tickets"], Ticket)
    rows = route_tickets(tickets, screenings, run.model, run.resource("triage"), run.llm.ledger, run.step)
    return Output(to_frame(rows, TicketRoute), metadata=routing_metadata(rows))


def routing_metadata(rows: list[TicketRoute]) -> dict[str, object]:
    """The routing's figures; the model session adds usage and the cost against the strong tier."""
    return {
        "tickets": len(rows),
        "routing_mix": MetadataValue.json(dict(Counter(r.intent for r in rows))),
        "decided_by": MetadataValue.json(dict(Counter(r.decided_by for r in rows))),
        "votes": sum(bool(r.votes) for r in rows),
        "escalated_to_strong": sum(r.decided_by == "strong" or (r.needs_person and r.calls > 1) for r in rows),
        "escalated_to_person": sum(r.needs_person for r in rows),
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
