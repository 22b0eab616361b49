"""Jobs: the units that schedules, sensors, the UI and the run command launch."""

from dagster import AssetSelection, define_asset_job

# Publishing waits for a person; no job that runs unattended may include it.
PUBLISHED = AssetSelection.assets("published_digest")

digest_job = define_asset_job(
    name="digest_job",
    selection=AssetSelection.all() - PUBLISHED,
    description="Materialize the whole graph, ingestion to summaries, with every blocking check.",
)

publish_job = define_asset_job(
    name="publish_job",
    selection=PUBLISHED,
    description="Approve or reject the latest summaries (run config: approver, decision, reason).",
)
