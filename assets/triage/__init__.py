"""The support-triage pipeline, partitioned by ticket: tickets → screening → routes →
context → reply drafts → reply checks → approvals → sent replies. It has no YAML step; the
routing prompt is its own (`prompts/`), the others belong to the support library
(`resources/support/`), which the reply loops share."""

from assets.components.partitions import TICKETS
from assets.components.pipeline import Pipeline
from assets.triage import (
    reply_checks,
    reply_delivery,
    reply_drafts,
    ticket_context,
    ticket_routes,
    ticket_screening,
    tickets,
)

TRIAGE = Pipeline(
    name="triage",
    groups=("triage_intake", "triage_routing", "triage_replies", "triage_delivery"),
    stages=(tickets, ticket_screening, ticket_routes, ticket_context, reply_drafts, reply_checks, reply_delivery),
    partitions_def=TICKETS,
)
