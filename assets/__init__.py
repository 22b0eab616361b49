"""Assets: one module per stage, each owning its schemas, prompts and asset checks."""

from dagster import load_asset_checks_from_modules, load_assets_from_modules

from assets import (
    digest_report,
    draft_revisions,
    drafts,
    fact_checks,
    ingestion,
    publishing,
    reply_checks,
    reply_delivery,
    reply_drafts,
    retrieval,
    signals,
    summaries,
    ticket_context,
    ticket_routes,
    ticket_screening,
    tickets,
)
from assets.config import PipelineConfig, TriageConfig

DIGEST_STAGES = [
    ingestion,
    retrieval,
    signals,
    drafts,
    fact_checks,
    draft_revisions,
    summaries,
    digest_report,
    publishing,
]
TRIAGE_STAGES = [tickets, ticket_screening, ticket_routes, ticket_context, reply_drafts, reply_checks, reply_delivery]
STAGES = DIGEST_STAGES + TRIAGE_STAGES

ALL_ASSETS = load_assets_from_modules(STAGES)
ALL_ASSET_CHECKS = load_asset_checks_from_modules(STAGES)

__all__ = [
    "ALL_ASSETS",
    "ALL_ASSET_CHECKS",
    "DIGEST_STAGES",
    "PipelineConfig",
    "STAGES",
    "TRIAGE_STAGES",
    "TriageConfig",
]
