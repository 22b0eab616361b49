"""Assets: one module per stage, each owning its schemas, prompts and asset checks."""

from dagster import load_asset_checks_from_modules, load_assets_from_modules

from assets import draft_revisions, drafts, fact_checks, ingestion, publishing, reports, retrieval, signals, summaries
from assets.config import PipelineConfig

STAGES = [ingestion, retrieval, signals, drafts, fact_checks, draft_revisions, summaries, reports, publishing]

ALL_ASSETS = load_assets_from_modules(STAGES)
ALL_ASSET_CHECKS = load_asset_checks_from_modules(STAGES)

__all__ = ["ALL_ASSETS", "ALL_ASSET_CHECKS", "PipelineConfig", "STAGES"]
