"""Reply checks: the output guardrails and the risk that decides whether a person approves.

Every drafted reply is checked by `resources.guardrails.reply_guardrails`; a reply that breaks a rule
is `blocked` with the rules and what was found, and goes to a person instead of the
customer. The others are `deliverable`. Risk decides who lets a deliverable reply go:
a refund, a ticket that carried an injection, or a route settled by escalation or by a
vote needs a person's approval; the rest are approved by policy.

The blocking check re-applies the guardrails to every reply marked deliverable, from
the stored text, so no run can deliver a reply that breaks them: whatever changed the
table (a bug, a hand edit, a later rule), delivery waits until it is fixed.
"""

import hashlib
from collections import Counter
from typing import Literal

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
    asset_check,
)
from pydantic import BaseModel, Field

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.partitions import TICKETS
from assets.triage.reply_drafts import ReplyDraft
from assets.triage.ticket_routes import TicketRoute
from assets.triage.ticket_screening import ScreenedTicket
from assets.triage.tickets import Ticket
from resources.guardrails.reply_guardrails import Violation, output_violations, promised_refunds
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import TriageConfig
from resources.support.support_desk import SupportDeskResource
from resources.tables import from_frame, to_frame

GROUP = "triage_replies"


class ReplyCheck(BaseModel):
    ticket: str
    ticket_id: str = ""
    customer_id: str = ""
    as_of: str = Field(default="", description="The ticket's date: refunds are judged as of it.")
    verdict: Literal["deliverable", "blocked", "no_reply", "escalated"]
    violations: list[Violation] = []
    risk_factors: list[str] = []
    needs_approval: bool = False
    reason: str = ""
    reply: str = ""
    reply_version: str = Field(default="", description="Hash of the reply text: what an approval approves.")
    flagged_text: list[str] = Field(default=[], description="What the input guardrails flagged in the ticket.")

    @classmethod
    def of_draft(cls, draft: ReplyDraft, ticket: Ticket, screening: ScreenedTicket | None) -> "ReplyCheck":
        """A draft's row before any rule is applied: escalated, as every reply is until the
        guardrails pass it, with what the rules read (the ticket's date, what was flagged in it)."""
        return cls(
            ticket=draft.ticket,
            ticket_id=draft.ticket_id,
            customer_id=draft.customer_id,
            as_of=ticket.received_at[:10],
            verdict="escalated",
            reason=draft.reason,
            reply=draft.reply,
            flagged_text=screening.flagged_text if screening else [],
        )


def reply_version(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def risk_factors(draft: ReplyDraft, route: TicketRoute | None, screening: ScreenedTicket | None) -> list[str]:
    factors = []
    if promised_refunds(draft.reply) or any(s.get("tool") == "compute_refund" for s in draft.agent_steps):
        factors.append("refund")
    if screening is not None and screening.injection:
        factors.append("ticket carried a prompt injection")
    if screening is not None and screening.abuse_suspected:
        factors.append("classifier suspects abuse")
    if route is not None and route.decided_by in ("vote", "strong"):
        factors.append(f"route settled by {route.decided_by} (first answer unsure)")
    return factors


def guardrail_violations(check: ReplyCheck, support_desk: SupportDeskResource, triage: TriageConfig) -> list[Violation]:
    """The output guardrails on a reply as its row stores it: the same reading when the reply is
    checked and when the blocking check re-checks the stored row, so the two cannot disagree."""
    return output_violations(
        check.reply,
        customer_id=check.customer_id,
        as_of=check.as_of,
        flagged_text=check.flagged_text,
        support_desk=support_desk,
        refund_limit=triage.refund_limit_eur,
    )


def check_reply(
    draft: ReplyDraft,
    ticket: Ticket,
    route: TicketRoute | None,
    screening: ScreenedTicket | None,
    support_desk: SupportDeskResource,
    triage: TriageConfig,
) -> ReplyCheck:
    base = ReplyCheck.of_draft(draft, ticket, screening)
    if draft.status == "no_reply":
        return base.model_copy(update={"verdict": "no_reply"})
    if draft.status != "drafted":
        return base
    violations = guardrail_violations(base, support_desk, triage)
    if violations:
        return base.model_copy(
            update={
                "verdict": "blocked",
                "violations": violations,
                "reason": "blocked by output guardrails: " + "; ".join(f"{v.rule}: {v.detail}" for v in violations),
            }
        )
    factors = risk_factors(draft, route, screening)
    return base.model_copy(
        update={
            "verdict": "deliverable",
            "risk_factors": factors,
            "needs_approval": bool(factors),
            "reason": "",
            "reply_version": reply_version(draft.reply),
        }
    )


@asset(
    **PipelineAssetSpec(
        group=GROUP, code_version="1", rows=ReplyCheck, partitions=TICKETS, kinds={"python"}
    ).asset_keywords()
)
def reply_checks(
    context: AssetExecutionContext,
    support_desk: SupportDeskResource,
    triage: TriageConfig,
    support_tickets: pd.DataFrame,
    ticket_screening: pd.DataFrame,
    ticket_routes: pd.DataFrame,
    reply_drafts: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """Each reply's output-guardrail verdict (deliverable, blocked with the rule) and the risk that decides approval."""
    tickets = {t.ticket: t for t in from_frame(support_tickets, Ticket)}
    screenings = {s.ticket: s for s in from_frame(ticket_screening, ScreenedTicket)}
    routes = {r.ticket: r for r in from_frame(ticket_routes, TicketRoute)}
    rows = [
        check_reply(d, tickets[d.ticket], routes.get(d.ticket), screenings.get(d.ticket), support_desk, triage)
        for d in from_frame(reply_drafts, ReplyDraft)
    ]
    blocked = [r for r in rows if r.verdict == "blocked"]
    return Output(
        to_frame(rows, ReplyCheck),
        metadata={
            "replies": len(rows),
            "verdicts": MetadataValue.json(dict(Counter(r.verdict for r in rows))),
            "blocked_by_rule": MetadataValue.json(dict(Counter(v.rule for r in blocked for v in r.violations))),
            "needs_approval": sum(r.needs_approval for r in rows),
            "blocked": MetadataValue.md(
                markdown_table([{"ticket": r.ticket, "reason": r.reason[:200]} for r in blocked[:20]])
            ),
        },
    )


@asset_check(
    asset=reply_checks,
    blocking=True,
    description="Every reply marked deliverable passes the output guardrails again (no other customer's data, "
    "no refund over the policy limit, no planted instruction followed); any failure stops delivery.",
)
def deliverable_replies_pass_guardrails(
    support_desk: SupportDeskResource, triage: TriageConfig, reply_checks: pd.DataFrame
) -> AssetCheckResult:
    failures = []
    for row in from_frame(reply_checks, ReplyCheck):
        if row.verdict != "deliverable":
            continue
        failures += [
            {"ticket": row.ticket, "rule": v.rule, "detail": v.detail}
            for v in guardrail_violations(row, support_desk, triage)
        ]
    return AssetCheckResult(
        passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        description=f"{len({f['ticket'] for f in failures})} deliverable replies break an output guardrail"
        if failures
        else "every deliverable reply passes the output guardrails",
        metadata={"violations": len(failures), "failures": MetadataValue.md(markdown_table(failures[:20]))},
    )
