"""The support-triage pipeline, partitioned by ticket: tickets → screening → routes →
context → reply drafts → reply checks → approvals → sent replies. Its YAML steps live in
`steps/`; its prompts belong to the support library (`resources/support/`), which the
reply loops share."""

from assets.components.pipeline import Pipeline
from assets.triage import (
    reply_checks,
    reply_delivery,
    reply_drafts,
    steps,
    ticket_context,
    ticket_routes,
    ticket_screening,
    tickets,
)

TRIAGE = Pipeline(
    name="triage",
    groups=("triage_intake", "triage_routing", "triage_replies", "triage_delivery"),
    stages=(tickets, ticket_screening, ticket_routes, ticket_context, reply_drafts, reply_checks, reply_delivery),
    steps=steps,
)
