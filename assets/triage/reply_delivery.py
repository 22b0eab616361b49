"""Approval and delivery: a person before anything risky leaves, and every reply sent once.

`reply_approvals` applies the approval log (the same mechanism as the digest's
publication, table `reply_approvals`): a low-risk deliverable reply is approved by
policy; a risky one waits until a person materializes `reply_approvals` for its
ticket with run config naming themselves and their decision (`reply_approval_job`).
A decision is tied to the reply's version: a reply that changed needs a new decision.

`sent_replies` sends the approved ones through the mailer (SMTP, or a Maildir folder
by default), each under a stable Message-ID and through the delivery ledger, so a
retried or re-executed step never sends a reply twice. A failed delivery does not
stop the others; the step fails after trying them all, so the run shows it and a
re-execution sends only what is missing. Sent replies join the customer's memory.
"""

from collections import Counter
from datetime import datetime, timezone
from typing import Literal

import pandas as pd
from dagster import AssetExecutionContext, Config, Failure, MetadataValue, Output, asset
from pydantic import BaseModel, Field

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.partitions import TICKETS
from assets.triage.reply_checks import ReplyCheck
from assets.triage.ticket_context import memory_for
from assets.triage.tickets import Ticket
from resources.mailer import MailerResource, OutgoingMessage, reply_message_id
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import PipelineConfig
from resources.storage.approvals import ApprovalLog
from resources.support.conversation_memory import Turn
from resources.support.delivery_ledger import DeliveryLedger, deliver_once
from resources.support.support_desk import SupportDeskError, SupportDeskResource
from resources.tables import from_frame, to_frame

GROUP = "triage_delivery"
POLICY_APPROVER = "policy:low-risk"
DELIVERY_LEDGER = "reply_deliveries"


class ReplyDecisionConfig(Config):
    """A person's decision on waiting replies; empty when the pipeline runs unattended."""

    approver: str = Field(default="", description="Who decides (name or e-mail).")
    decision: Literal["", "approve", "reject"] = Field(
        default="", description="approve or reject; empty = no decision."
    )
    reason: str = Field(default="", description="Required when rejecting.")
    tickets: list[str] = Field(
        default=[], description="Ticket partitions decided; empty = every waiting reply in the run."
    )


class ReplyApproval(BaseModel):
    reply_version: str  # "<ticket>@<version of the reply text>"
    approver: str
    decision: str
    reason: str
    decided_at: str


class ApprovalState(BaseModel):
    ticket: str
    state: Literal["approved", "rejected", "awaiting_approval", "not_deliverable"]
    approver: str = ""
    reason: str = ""
    decided_at: str = ""
    reply_version: str = ""


def approval_log(pipeline: PipelineConfig) -> ApprovalLog:
    return ApprovalLog(pipeline, table="reply_approvals", model=ReplyApproval)


def decide(check: ReplyCheck, log: ApprovalLog, config: ReplyDecisionConfig) -> ApprovalState:
    if check.verdict != "deliverable":
        return ApprovalState(
            ticket=check.ticket, state="not_deliverable", reason=f"{check.verdict}: {check.reason}"[:300]
        )
    subject = f"{check.ticket}@{check.reply_version}"
    earlier = log.decision_of(subject)
    if earlier is None:
        now = datetime.now(timezone.utc).isoformat()
        if config.decision and (not config.tickets or check.ticket in config.tickets):
            earlier = ReplyApproval(
                reply_version=subject,
                approver=config.approver,
                decision=config.decision,
                reason=config.reason,
                decided_at=now,
            )
            log.record(earlier)
        elif not check.needs_approval:
            earlier = ReplyApproval(
                reply_version=subject,
                approver=POLICY_APPROVER,
                decision="approve",
                reason="low risk: no refund, no injection, confident route",
                decided_at=now,
            )
            log.record(earlier)
        else:
            return ApprovalState(
                ticket=check.ticket,
                state="awaiting_approval",
                reply_version=subject,
                reason="needs a person: " + ", ".join(check.risk_factors),
            )
    return ApprovalState(
        ticket=check.ticket,
        state="approved" if earlier.decision == "approve" else "rejected",
        approver=earlier.approver,
        reason=earlier.reason,
        decided_at=earlier.decided_at,
        reply_version=subject,
    )


@asset(
    **PipelineAssetSpec(
        group=GROUP, code_version="1", rows=ApprovalState, partitions=TICKETS, kinds={"python"}
    ).asset_keywords()
)
def reply_approvals(
    context: AssetExecutionContext, config: ReplyDecisionConfig, pipeline: PipelineConfig, reply_checks: pd.DataFrame
) -> Output[pd.DataFrame]:
    """Each reply's approval: by policy when low risk, by a person (run config) when risky, or still waiting."""
    if config.decision and not config.approver.strip():
        raise Failure("A decision needs an approver (config: approver).")
    if config.decision == "reject" and not config.reason.strip():
        raise Failure("A rejection needs a reason (config: reason).")
    log = approval_log(pipeline)
    rows = [decide(check, log, config) for check in from_frame(reply_checks, ReplyCheck)]
    waiting = [r for r in rows if r.state == "awaiting_approval"]
    return Output(
        to_frame(rows, ApprovalState),
        metadata={
            "states": MetadataValue.json(dict(Counter(r.state for r in rows))),
            "awaiting_approval": len(waiting),
            "waiting": MetadataValue.md(markdown_table([{"ticket": r.ticket, "why": r.reason} for r in waiting[:20]])),
            "how_to_decide": "Launch reply_approval_job for the waiting tickets' partitions with run config "
            "ops.reply_approvals.config: {approver, decision: approve|reject, reason, tickets}.",
        },
    )


class SentReply(BaseModel):
    ticket: str
    state: Literal["sent", "already_sent", "in_doubt", "failed", "awaiting_approval", "rejected", "not_deliverable"]
    message_id: str = ""
    recipient: str = ""
    detail: str = ""


def outgoing(check: ReplyCheck, ticket: Ticket, recipient: str, sender: str) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=reply_message_id(ticket.ticket_id, check.reply_version),
        to_address=recipient,
        from_address=sender,
        subject=f"Re: {' '.join(ticket.subject.split())[:150]}",
        body=check.reply + "\n",
        headers={"X-Ticket": ticket.ticket_id},
    )


def ticket_turn(ticket: Ticket, role: Literal["customer", "agent"], text: str) -> Turn:
    """One side of a ticket's exchange as the customer's memory keeps it: one turn per side (a
    re-execution overwrites, never adds), the reply ordered just after the ticket it answers."""
    asked = role == "customer"
    return Turn(
        turn_id=f"{ticket.ticket}#{'c' if asked else 'a'}",
        customer_id=ticket.customer_id,
        ticket=ticket.ticket,
        role=role,
        text=text,
        at=ticket.received_at if asked else ticket.received_at + "+reply",
    )


@asset(
    **PipelineAssetSpec(
        group=GROUP, code_version="1", rows=SentReply, partitions=TICKETS, kinds={"email"}
    ).asset_keywords()
)
def sent_replies(
    context: AssetExecutionContext,
    mailer: MailerResource,
    support_desk: SupportDeskResource,
    pipeline: PipelineConfig,
    support_tickets: pd.DataFrame,
    reply_checks: pd.DataFrame,
    reply_approvals: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """Approved replies as delivered: each exactly once (stable Message-ID, delivery ledger), the rest with why not."""
    tickets = {t.ticket: t for t in from_frame(support_tickets, Ticket)}
    approvals = {a.ticket: a for a in from_frame(reply_approvals, ApprovalState)}
    ledger = DeliveryLedger(pipeline.state_location(DELIVERY_LEDGER))
    memory = memory_for(pipeline)
    # What each customer wrote is history, answered or not: written together, not a commit per ticket.
    memory.remember_many(
        [
            ticket_turn(ticket, "customer", f"{ticket.subject}\n{ticket.body}")
            for ticket in tickets.values()
            if ticket.status == "received"
        ]
    )
    rows: list[SentReply] = []
    for check in from_frame(reply_checks, ReplyCheck):
        approval = approvals.get(check.ticket)
        if approval is None or approval.state != "approved":
            state = approval.state if approval is not None else "not_deliverable"
            rows.append(
                SentReply(ticket=check.ticket, state=state, detail=approval.reason if approval else "no approval row")
            )
            continue
        ticket = tickets[check.ticket]
        try:
            recipient = support_desk.customer(ticket.customer_id).email
        except SupportDeskError as exc:
            rows.append(SentReply(ticket=check.ticket, state="failed", detail=f"no recipient: {exc}"))
            continue
        outcome = deliver_once(ledger, mailer, outgoing(check, ticket, recipient, mailer.sender), check.ticket)
        rows.append(
            SentReply(
                ticket=check.ticket,
                state=outcome.state,
                message_id=outcome.message_id,
                recipient=recipient,
                detail=outcome.detail,
            )
        )
        if outcome.state in ("sent", "already_sent"):  # at once: a crash later on loses none of it
            memory.remember(ticket_turn(ticket, "agent", check.reply))
    failed = [r for r in rows if r.state == "failed"]
    states = dict(Counter(r.state for r in rows))
    context.log.info(f"Delivery: {states}")
    if failed:
        raise Failure(
            f"{len(failed)} of {len(rows)} replies could not be delivered; the others were, and a re-execution "
            "sends only the missing ones: " + "; ".join(f"{r.ticket}: {r.detail}" for r in failed)[:1500],
            metadata={"states": MetadataValue.json(states)},
        )
    return Output(
        to_frame(rows, SentReply),
        metadata={
            "states": MetadataValue.json(states),
            "sent": states.get("sent", 0),
            "already_sent": states.get("already_sent", 0),
            "in_doubt": states.get("in_doubt", 0),
            "transport": mailer.transport,
            "preview": MetadataValue.md(markdown_table([r.model_dump() for r in rows[:20]])),
        },
    )
