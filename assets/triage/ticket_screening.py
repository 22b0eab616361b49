"""Input guardrails for tickets: prompt injection and abuse, before any model acts on one.

Two opinions, both recorded. The heuristics of `resources.guardrails.prompt_injection` (role markers,
"ignore your rules", fake system turns) and an abuse lexicon cost nothing and cannot be
talked out of their verdict; the `fast`-tier classifier reads every ticket as delimited
data and catches what the patterns miss. For injection either one flagging is enough:
an injection-flagged ticket is still routed and answered as data, but its reply needs
a person's approval, and the output guardrails check that the reply did not obey it.
Abuse is different, because an abusive ticket gets no reply: one model's opinion
never silences a customer. Abuse the patterns find is `abusive`; abuse only the
classifier sees is `abuse_suspected`, which puts the reply before a person instead
(a small model flags nearly everything).
"""

import re
from typing import Literal

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset
from pydantic import BaseModel, Field

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.partitions import TICKETS
from assets.triage.tickets import Ticket
from resources import ModelResource, ModelSession
from resources.guardrails.prompt_injection import screen
from resources.metadata.markdown_tables import markdown_table
from resources.support.triage_prompts import MAX_TOKENS, SCREEN, ticket_block, user
from resources.tables import from_frame, to_frame

GROUP = "triage_intake"
CODE_VERSION = f"1-{SCREEN.version}"

ABUSE = re.compile(
    r"\b(?:idiots?|morons?|stupid|incompetent|clueless\s+amateurs?|should\s+be\s+ashamed|useless\s+(?:people|idiots|clowns|company)|clowns?|scam(?:mers)?|"
    r"pathetic|shut\s+up|i\s+will\s+(?:find|hurt|destroy|come\s+for)\s+you|you(?:'ll|\s+will)\s+regret|"
    r"f\W?u\W?c\W?k|sh[i1]t|bastards?|garbage\s+(?:people|company)|i\s+know\s+where\s+(?:you|your)|"
    r"i\s+know\s+your\s+office|watch\s+your\s+back|you(?:'ll|\s+will)\s+(?:pay|be\s+sorry)|regrets?\s+it|or\s+else)\b",
    re.IGNORECASE,
)


class TicketScreen(BaseModel):
    """The fast tier's verdict on one ticket."""

    injection: bool
    abusive: bool
    reason: str = Field(default="", max_length=200)


class ScreenedTicket(BaseModel):
    ticket: str
    ticket_id: str = ""
    verdict: Literal["clean", "injection", "abusive", "injection_and_abusive", "quarantined"]
    injection: bool = False
    abusive: bool = Field(
        default=False, description="Abuse the patterns found: the ticket gets no reply, a person is told."
    )
    abuse_suspected: bool = Field(
        default=False, description="Abuse only the classifier saw: the reply waits for a person."
    )
    reasons: list[str] = Field(default=[], description="Each rule or classifier reason that flagged the ticket.")
    flagged_text: list[str] = Field(default=[], description="The spans the heuristics caught.")
    classifier: str = Field(
        default="", description="flagged, clean, or failed: <error> (the heuristics stand alone then)."
    )
    trace_id: str = ""


def heuristic_screen(ticket: Ticket) -> tuple[list[str], list[str], list[str]]:
    """(injection reasons, abuse reasons, flagged spans) from the patterns alone."""
    text = f"{ticket.subject}\n\n{ticket.body}"
    screening = screen(text)
    injection = [f"heuristic {f.reason}" for f in screening.flagged]
    abuse = [f"heuristic abuse: {m.group()!r}" for m in ABUSE.finditer(text)][:3]
    return injection, abuse, [f.text[:200] for f in screening.flagged]


def verdict_of(injection: bool, abusive: bool) -> str:
    return (
        "injection_and_abusive"
        if injection and abusive
        else "injection"
        if injection
        else "abusive"
        if abusive
        else "clean"
    )


def screen_tickets(tickets: list[Ticket], llm: ModelSession) -> list[ScreenedTicket]:
    received = [t for t in tickets if t.status == "received"]
    answers = llm.map_traced_structured(
        [user(SCREEN.render(ticket=ticket_block(t.subject, t.body))) for t in received],
        TicketScreen,
        tier="fast",
        max_tokens=MAX_TOKENS["screen"],
        partitions=[t.ticket for t in received],
    )
    by_ticket = dict(zip((t.ticket for t in received), answers))
    rows = []
    for ticket in tickets:
        if ticket.status != "received":
            rows.append(
                ScreenedTicket(
                    ticket=ticket.ticket,
                    ticket_id=ticket.ticket_id,
                    verdict="quarantined",
                    reasons=[ticket.quarantine_reason],
                )
            )
            continue
        injection, abuse, spans = heuristic_screen(ticket)
        answer, trace_id = by_ticket[ticket.ticket]
        if isinstance(answer, Exception):
            classifier = f"failed: {answer}"[:300]
        else:
            classifier = "flagged" if answer.injection or answer.abusive else "clean"
            if answer.injection:
                injection.append(f"classifier: {answer.reason or 'instructions to a model'}")
        suspected = not isinstance(answer, Exception) and answer.abusive and not abuse
        if not isinstance(answer, Exception) and answer.abusive:
            abuse.append(f"classifier: {answer.reason or 'abusive'}")
        abusive = bool(abuse) and not suspected
        rows.append(
            ScreenedTicket(
                ticket=ticket.ticket,
                ticket_id=ticket.ticket_id,
                verdict=verdict_of(bool(injection), abusive),  # type: ignore[arg-type]
                injection=bool(injection),
                abusive=abusive,
                abuse_suspected=suspected,
                reasons=injection + abuse,
                flagged_text=spans,
                classifier=classifier,
                trace_id=trace_id,
            )
        )
    return rows


@asset(
    **PipelineAssetSpec(
        group=GROUP,
        code_version=CODE_VERSION,
        rows=ScreenedTicket,
        partitions=TICKETS,
        kinds={"openai"},
        calls_model=True,
        metadata={"prompt_version": SCREEN.version},
    ).asset_keywords()
)
def ticket_screening(
    context: AssetExecutionContext, model: ModelResource, support_tickets: pd.DataFrame
) -> Output[pd.DataFrame]:
    """Each ticket's input-guardrail verdict (prompt injection, abuse) with the rule or classifier reason."""
    with model.session(context) as llm:
        rows = screen_tickets(from_frame(support_tickets, Ticket), llm)
    mix = pd.Series([r.verdict for r in rows]).value_counts().to_dict() if rows else {}
    flagged = [r for r in rows if r.verdict not in ("clean", "quarantined")]
    return Output(
        to_frame(rows, ScreenedTicket),
        metadata={
            "tickets": len(rows),
            "verdicts": MetadataValue.json(mix),
            "flagged": len(flagged),
            "abuse_suspected": sum(r.abuse_suspected for r in rows),
            "classifier_failures": sum(r.classifier.startswith("failed") for r in rows),
            "preview": MetadataValue.md(
                markdown_table(
                    [
                        {"ticket": r.ticket, "verdict": r.verdict, "reasons": "; ".join(r.reasons)[:200]}
                        for r in flagged[:15]
                    ]
                )
            ),
        },
    )
