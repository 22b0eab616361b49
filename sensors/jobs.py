"""Jobs: the units that schedules, sensors, the UI and the run command launch."""

from dagster import AssetSelection, define_asset_job

from assets.digest import DIGEST
from assets.triage import TRIAGE

digest_job = define_asset_job(
    name="digest_job",
    selection=DIGEST.unattended(),
    description="Materialize the whole graph, ingestion to summaries, with every blocking check. "
    "Launch it over every documents partition (the run command does): one run, not one per document.",
)

document_job = define_asset_job(
    name="document_job",
    selection=DIGEST.per_partition_selection(),
    partitions_def=DIGEST.partitions_def,
    description="Ingest, chunk and extract signals for the requested documents only (what the inbox sensor launches).",
)

digest_refresh_job = define_asset_job(
    name="digest_refresh_job",
    selection=DIGEST.unattended() - DIGEST.per_partition_selection(),
    description="Rebuild index, drafts, fact checks and summaries from the documents ingested so far "
    "(what the daily schedule launches; the inbox sensor keeps the documents current).",
)

index_job = define_asset_job(
    name="index_job",
    selection=AssetSelection.assets("retrieval_index"),
    description="Bring the retrieval index in line with the registered documents (after removals).",
)

publish_job = define_asset_job(
    name="publish_job",
    selection=DIGEST.awaiting_a_person(),
    description="Approve or reject the latest summaries (run config: approver, decision, reason).",
)

triage_job = define_asset_job(
    name="triage_job",
    selection=TRIAGE.unattended(),
    partitions_def=TRIAGE.partitions_def,
    description="Triage the requested tickets: intake, screening, routing, context, reply drafts, reply checks, "
    "approvals by policy and delivery of approved replies. Launched over a range of tickets partitions by the ticket "
    "inbox sensor and `ai-pipelines triage`: one run, not one per ticket.",
)

reply_approval_job = define_asset_job(
    name="reply_approval_job",
    selection=AssetSelection.assets("reply_approvals", "sent_replies"),
    partitions_def=TRIAGE.partitions_def,
    description="A person approves or rejects waiting replies, which are then delivered exactly once "
    "(run config ops.reply_approvals.config: approver, decision, reason, tickets).",
)
