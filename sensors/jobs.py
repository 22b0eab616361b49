"""Jobs: the units that schedules, sensors, the UI and the run command launch."""

from dagster import AssetSelection, define_asset_job

from assets.documents import DOCUMENTS

# Publishing waits for a person; no job that runs unattended may include it.
PUBLISHED = AssetSelection.assets("published_digest")

digest_job = define_asset_job(
    name="digest_job",
    selection=AssetSelection.all() - PUBLISHED,
    description="Materialize the whole graph, ingestion to summaries, with every blocking check. "
    "Launch it over every documents partition (the run command does): one run, not one per document.",
)

PER_DOCUMENT = AssetSelection.assets("source_documents", "quarantined_documents", "chunks", "signals")

document_job = define_asset_job(
    name="document_job",
    selection=PER_DOCUMENT,
    partitions_def=DOCUMENTS,
    description="Ingest, chunk and extract signals for the requested documents only (what the inbox sensor launches).",
)

digest_refresh_job = define_asset_job(
    name="digest_refresh_job",
    selection=AssetSelection.all() - PUBLISHED - PER_DOCUMENT,
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
    selection=PUBLISHED,
    description="Approve or reject the latest summaries (run config: approver, decision, reason).",
)
