"""Assets: one folder per pipeline (`digest/`, `triage/`), each declaring its stages, its
YAML steps and its groups; `components/` holds how an asset is declared."""

from assets.components.pipeline import Pipeline
from assets.digest import DIGEST
from assets.triage import TRIAGE

PIPELINES: tuple[Pipeline, ...] = (DIGEST, TRIAGE)

ALL_ASSETS = [a for pipeline in PIPELINES for a in pipeline.assets]
ALL_ASSET_CHECKS = [c for pipeline in PIPELINES for c in pipeline.asset_checks]
STEP_MODULES = tuple(pipeline.steps for pipeline in PIPELINES if pipeline.steps is not None)

__all__ = ["ALL_ASSETS", "ALL_ASSET_CHECKS", "DIGEST", "PIPELINES", "STEP_MODULES", "TRIAGE", "Pipeline"]
