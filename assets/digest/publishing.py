"""Publishing: a digest leaves the pipeline only when a person approves it.

Publishing is irreversible, so it is not part of the digest job: a person reads the
latest `summaries` in the UI and materializes `published_digest` with run config
naming themselves and their decision. An approval publishes that exact version of
the summaries; a rejection publishes nothing and is kept with its reason. Every
decision, either way, is a row of the approvals log.

Publishing happens once per version: a run re-executed after a crash, or the same
approval given twice, finds the earlier approval and leaves the published file and
the log as they were, so a reader never sees two publications of one digest.
"""

import hashlib
from datetime import datetime, timezone
from typing import Literal

import pandas as pd
from dagster import AssetExecutionContext, Config, Failure, MetadataValue, Output, asset
from pydantic import Field

from assets.components.asset_spec import PipelineAssetSpec
from assets.digest.summaries import TopicSummary, render_digest
from resources.pipeline_config import PipelineConfig
from resources.storage.approvals import Approval, ApprovalLog
from resources.storage.output_files import write_whole
from resources.tables import from_frame

GROUP = "summaries"


class ApprovalConfig(Config):
    approver: str = Field(description="Who decides (name or e-mail).")
    decision: Literal["approve", "reject"]
    reason: str = Field(default="", description="Required when rejecting.")
    summaries_version: str = Field(default="", description="Optional: the version you reviewed; refused if it changed.")


def summaries_version(summaries: pd.DataFrame) -> str:
    return hashlib.sha256(summaries.to_json(orient="records").encode()).hexdigest()[:16]


@asset(**PipelineAssetSpec(group=GROUP, code_version="1", kinds={"markdown"}, output_required=False).asset_keywords())
def published_digest(
    context: AssetExecutionContext, config: ApprovalConfig, pipeline: PipelineConfig, summaries: pd.DataFrame
):
    """The digest as published, materialized only by a person's approval (run config: approver, decision, reason)."""
    version = summaries_version(summaries)
    if config.summaries_version and config.summaries_version != version:
        raise Failure(
            f"The summaries changed since version {config.summaries_version} was reviewed (now {version}); "
            "review the latest summaries and decide again."
        )
    if config.decision == "reject" and not config.reason.strip():
        raise Failure("A rejection needs a reason (config: reason).")
    log = ApprovalLog(pipeline)
    earlier = log.approval_of(version) if config.decision == "approve" else None
    approval = earlier or Approval(
        summaries_version=version,
        approver=config.approver,
        decision=config.decision,
        reason=config.reason,
        decided_at=datetime.now(timezone.utc).isoformat(),
    )
    if earlier is None:
        log.record(approval)
    if config.decision == "reject":
        context.log.warning(f"Summaries {version} rejected by {config.approver}: {config.reason}")
        return
    path = pipeline.output_path() / "published" / f"digest-{version}.md"
    digest = render_digest(from_frame(summaries, TopicSummary))
    if earlier is not None and path.exists():
        context.log.info(
            f"Summaries {version} were already published by {earlier.approver} at {earlier.decided_at}: {path}"
        )
    else:
        write_whole(path, f"{digest}\nApproved by {approval.approver} at {approval.decided_at}.\n")
    yield Output(
        approval.model_dump(),
        metadata={
            "location": MetadataValue.path(str(path.resolve())),
            "approver": approval.approver,
            "approved_at": approval.decided_at,
            "already_published": earlier is not None,
            "summaries_version": version,
            "preview": MetadataValue.md(digest),
        },
    )
