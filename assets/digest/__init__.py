"""The digest pipeline: documents → chunks → retrieval index → signals → drafts → fact
checks → revised drafts → summaries → digest report → published digest (after a person
approves). Its YAML steps live in `steps/`, its prompts in `prompts/`."""

from assets.components.partitions import DOCUMENT_BATCHES
from assets.components.pipeline import Pipeline
from assets.digest import (
    digest_report,
    draft_revisions,
    drafts,
    fact_checks,
    ingestion,
    publishing,
    retrieval,
    signals,
    steps,
    summaries,
)

DIGEST = Pipeline(
    name="digest",
    groups=("ingestion", "retrieval", "signals", "drafts", "fact_checks", "summaries"),
    stages=(ingestion, retrieval, signals, drafts, fact_checks, draft_revisions, summaries, digest_report, publishing),
    steps=steps,
    partitions_def=DOCUMENT_BATCHES,
    # What the inbox sensor runs for new or edited documents, one run over their range.
    per_partition=("source_documents", "quarantined_documents", "chunks", "signals"),
    # Publishing is irreversible: a person approves it in the UI.
    awaits_a_person=("published_digest",),
)
