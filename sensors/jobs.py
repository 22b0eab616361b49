"""Jobs: the units that schedules, sensors and the run command launch."""

from dagster import AssetSelection, define_asset_job

digest_job = define_asset_job(
    name="digest_job",
    selection=AssetSelection.all(),
    description="Materialize the whole graph, ingestion to summaries, with every blocking check.",
)
