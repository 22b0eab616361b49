"""What a run has to materialize: only the documents that are new or changed, and the
downstream assets only when something upstream of them moved.

Re-materializing an unchanged corpus costs no model calls (the response cache answers)
but it still costs Dagster a few events per document per asset, which at thousands of
documents is minutes. So before launching, the run command compares what the instance
recorded with what is there now:

- a document partition is *current* when its latest `source_documents` materialization
  recorded the same content hash as the file has now, `chunks` and `signals` were
  materialized after it, and all three were materialized with today's code versions;
- the downstream assets (index, drafts, fact checks, summaries, report) are *current*
  when each was materialized with today's code version after the latest
  materialization of every asset it reads, and no document was removed since.

Settings that shape outputs but are not code (topics, thresholds, chunk sizes) are
fingerprinted into a tag of the runs this command launches; whatever an earlier run
with other settings materialized is materialized again.
Documents to redo are covered by one partition range (from the first to the last of
them in partition order), so new files, which are registered at the end, are a range of
their own and one run. `--all` on the command line skips the comparison.
"""

from __future__ import annotations

import hashlib
import json

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions, EnvVar, RunsFilter
from pydantic import BaseModel

from assets.components.partitions import range_tags
from assets.digest.ingestion import CONTENT_HASH
from resources.documents.files import FileState
from resources.pipeline_config import PipelineConfig

PER_DOCUMENT_ASSETS = ("source_documents", "chunks", "signals")
DOWNSTREAM_ASSETS = ("retrieval_index", "drafts", "fact_checks", "draft_revisions", "summaries", "digest_report")
SETTINGS_TAG = "ai_pipelines/settings_fingerprint"
CODE_VERSION_TAG = "dagster/code_version"
_PAGE = 1000


class Latest(BaseModel):
    """The latest materialization of one asset (partition): what the plan compares."""

    storage_id: int
    run_id: str
    code_version: str = ""
    content_hash: str = ""


class RunPlan(BaseModel):
    documents: list[str]  # partitions to (re)materialize, in partition order
    refresh_downstream: bool
    reason: str

    @property
    def up_to_date(self) -> bool:
        return not self.documents and not self.refresh_downstream

    def range_tags(self, order: list[str]) -> dict[str, str]:
        """Run tags for one partition range covering every document to redo."""
        position = {key: i for i, key in enumerate(order)}
        ordered = sorted(self.documents, key=position.__getitem__)
        return range_tags(ordered)


def settings_fingerprint(pipeline: PipelineConfig) -> str:
    """The pipeline settings as configured (secrets by variable name, never by value)."""
    fields = {
        name: f"env:{value.env_var_name}" if isinstance(value, EnvVar) else repr(value)
        for name, value in sorted(pipeline.model_dump().items())
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def latest_materializations(instance: DagsterInstance, asset: str, keys: set[str] | None) -> dict[str, Latest]:
    """Per partition (or "" for an unpartitioned asset), its latest materialization.

    Reads newest first, a page at a time, and stops as soon as every wanted partition
    that was ever materialized has been seen (one query says which were), so the cost
    follows the corpus, not the length of the history, even when some never were.
    """
    wanted = keys & instance.get_materialized_partitions(AssetKey(asset)) if keys is not None else {""}
    found: dict[str, Latest] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset)), limit=_PAGE, cursor=cursor, ascending=False
        )
        for record in page.records:
            key = record.partition_key or ""
            materialization = record.asset_materialization
            if key in found or materialization is None:
                continue
            recorded = materialization.metadata.get(CONTENT_HASH)
            found[key] = Latest(
                storage_id=record.storage_id,
                run_id=record.run_id,
                code_version=(materialization.tags or {}).get(CODE_VERSION_TAG, ""),
                content_hash=str(recorded.value) if recorded is not None else "",
            )
        if not page.has_more or wanted <= found.keys():
            return found
        cursor = page.cursor


def runs_with_other_settings(instance: DagsterInstance, run_ids: set[str], fingerprint: str) -> set[str]:
    """Runs tagged with a settings fingerprint other than `fingerprint`. Runs without the
    tag (launched from the UI, a sensor or a schedule) ran with this code location's
    settings, which are the settings now."""
    if not run_ids:
        return set()
    runs = instance.get_runs(RunsFilter(run_ids=sorted(run_ids)))
    return {r.run_id for r in runs if r.tags.get(SETTINGS_TAG, fingerprint) != fingerprint}


def _document_is_current(key: str, recorded: list[Latest | None], code: list[str], file: FileState) -> bool:
    if any(r is None for r in recorded):
        return False
    source, chunks, signals = recorded
    return (
        source.content_hash == file.sha256[:16]
        and all(r.code_version == c for r, c in zip(recorded, code))
        and source.storage_id < chunks.storage_id < signals.storage_id
    )


def plan_run(
    instance: DagsterInstance,
    defs: Definitions,
    pipeline: PipelineConfig,
    files: dict[str, FileState],
    order: list[str],
    removed: list[str],
) -> RunPlan:
    """Compare the instance's records with the files, code and settings of now; see the module docstring."""
    code = {
        n: defs.resolve_assets_def(n).code_versions_by_key[AssetKey(n)] or ""
        for n in (*PER_DOCUMENT_ASSETS, *DOWNSTREAM_ASSETS)
    }
    per_document = {n: latest_materializations(instance, n, set(order)) for n in PER_DOCUMENT_ASSETS}
    downstream = {n: latest_materializations(instance, n, None).get("") for n in DOWNSTREAM_ASSETS}
    records = [r for per in per_document.values() for r in per.values()] + [r for r in downstream.values() if r]
    other_settings = runs_with_other_settings(instance, {r.run_id for r in records}, settings_fingerprint(pipeline))
    stale = [
        key
        for key in order
        if not _document_is_current(
            key,
            [per_document[n].get(key) for n in PER_DOCUMENT_ASSETS],
            [code[n] for n in PER_DOCUMENT_ASSETS],
            files[key],
        )
        or any(per_document[n][key].run_id in other_settings for n in PER_DOCUMENT_ASSETS)
    ]
    newest = {n: max((r.storage_id for r in per.values()), default=0) for n, per in per_document.items()}
    newest |= {n: r.storage_id if r else 0 for n, r in downstream.items()}
    out_of_date = [
        n
        for n, r in downstream.items()
        if r is None
        or r.code_version != code[n]
        or r.run_id in other_settings
        or any(
            newest.get(up.to_user_string(), 0) > r.storage_id
            for up in defs.resolve_assets_def(n).asset_deps[AssetKey(n)]
        )
    ]
    reasons = [f"{len(stale)} of {len(order)} documents new or changed"] if stale else []
    if removed:
        reasons.append(f"{len(removed)} removed")
    if out_of_date:
        reasons.append(f"to refresh: {', '.join(out_of_date)}")
    return RunPlan(
        documents=stale,
        refresh_downstream=bool(stale or removed or out_of_date),
        reason="; ".join(reasons) or f"all {len(order)} documents and every downstream asset are up to date",
    )
