"""What a run has to materialize: only the documents that are new or changed, and the
downstream assets only when something upstream of them moved.

Re-materializing an unchanged corpus costs no model calls (the response cache answers)
but it still costs Dagster a few events per document per asset, which at thousands of
documents is minutes. So before launching, the run command compares what the instance
recorded with what is there now:

- a document batch is *current* when its latest `source_documents` materialization
  recorded the same documents with the same content hashes as its files have now,
  `chunks` and `signals` were materialized after it, and all three were materialized with
  today's code versions;
- the downstream assets (index, drafts, fact checks, summaries, report) are *current*
  when each was materialized with today's code version after the latest
  materialization of every asset it reads, and no document was removed since.

Settings that shape outputs but are not code (topics, thresholds, chunk sizes) are
fingerprinted into a tag of the runs this command launches; whatever an earlier run
with other settings materialized is materialized again.
Batches to redo are covered by one partition range (from the first to the last of them
in partition order): one run, whose other batches in the range are answered by the
response cache. `--all` on the command line skips the comparison.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions, EnvVar, RunsFilter
from pydantic import BaseModel

from assets.components.partitions import range_tags
from assets.digest.ingestion import CONTENT_HASHES
from resources.documents.batches import BATCH_KEYS, batch_of
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
    recorded: Any = None  # the value of the metadata entry the reader asked for, if recorded

    @property
    def content_hashes(self) -> dict[str, str]:
        """A document batch's content hash per document (`CONTENT_HASHES`)."""
        return self.recorded if isinstance(self.recorded, dict) else {}


class RunPlan(BaseModel):
    documents: list[str]  # documents new or changed (or in a batch whose code changed), in registry order
    batches: list[str]  # document batches to (re)materialize, in partition order
    refresh_downstream: bool
    reason: str

    @property
    def up_to_date(self) -> bool:
        return not self.batches and not self.refresh_downstream

    def range_tags(self) -> dict[str, str]:
        """Run tags for one partition range covering every batch to redo."""
        return range_tags(self.batches)

    @classmethod
    def everything(cls, order: list[str]) -> "RunPlan":
        batches = [b for b in BATCH_KEYS if b in {batch_of(k) for k in order}]
        return cls(
            documents=order, batches=batches, refresh_downstream=True, reason=f"all {len(order)} documents, as asked"
        )


def settings_fingerprint(pipeline: PipelineConfig) -> str:
    """The pipeline settings as configured (secrets by variable name, never by value)."""
    fields = {
        name: f"env:{value.env_var_name}" if isinstance(value, EnvVar) else repr(value)
        for name, value in sorted(pipeline.model_dump().items())
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def latest_materializations(
    instance: DagsterInstance, asset: str, keys: set[str] | None, recorded: str = CONTENT_HASHES
) -> dict[str, Latest]:
    """Per partition (or "" for an unpartitioned asset), its latest materialization, with the
    value its metadata recorded under `recorded`.

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
            entry = materialization.metadata.get(recorded)
            found[key] = Latest(
                storage_id=record.storage_id,
                run_id=record.run_id,
                code_version=(materialization.tags or {}).get(CODE_VERSION_TAG, ""),
                recorded=entry.value if entry is not None else None,
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


def _batch_is_current(recorded: list[Latest | None], code: list[str], other_settings: set[str]) -> bool:
    """Whether a batch's per-document assets were materialized in order, with today's code and settings."""
    if any(r is None for r in recorded):
        return False
    source, chunks, signals = recorded
    return (
        all(r.code_version == c and r.run_id not in other_settings for r, c in zip(recorded, code))
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
    files_by_batch: dict[str, dict[str, str]] = {}
    for key in order:
        files_by_batch.setdefault(batch_of(key), {})[key] = files[key].sha256[:16]
    per_document = {n: latest_materializations(instance, n, set(BATCH_KEYS)) for n in PER_DOCUMENT_ASSETS}
    downstream = {n: latest_materializations(instance, n, None).get("") for n in DOWNSTREAM_ASSETS}
    records = [r for per in per_document.values() for r in per.values()] + [r for r in downstream.values() if r]
    other_settings = runs_with_other_settings(instance, {r.run_id for r in records}, settings_fingerprint(pipeline))
    stale_documents: list[str] = []
    stale_batches: set[str] = set()
    for batch in BATCH_KEYS:
        now = files_by_batch.get(batch, {})
        source = per_document["source_documents"].get(batch)
        recorded = source.content_hashes if source else {}
        if not now and not recorded:
            continue  # an empty batch that never held a document
        current = _batch_is_current(
            [per_document[n].get(batch) for n in PER_DOCUMENT_ASSETS],
            [code[n] for n in PER_DOCUMENT_ASSETS],
            other_settings,
        )
        changed = [k for k, sha in now.items() if not current or recorded.get(k) != sha]
        if changed or recorded.keys() - now.keys():
            stale_batches.add(batch)
            stale_documents += changed
    changed_documents = set(stale_documents)
    stale = [k for k in order if k in changed_documents]
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
    in_batches = f"{len(stale_batches)} batch" + ("es" if len(stale_batches) != 1 else "")
    reasons = [f"{len(stale)} of {len(order)} documents new or changed, in {in_batches}"] if stale else []
    if removed:
        reasons.append(f"{len(removed)} removed")
    if out_of_date:
        reasons.append(f"to refresh: {', '.join(out_of_date)}")
    return RunPlan(
        documents=stale,
        batches=[b for b in BATCH_KEYS if b in stale_batches],
        refresh_downstream=bool(stale_batches or removed or out_of_date),
        reason="; ".join(reasons) or f"all {len(order)} documents and every downstream asset are up to date",
    )
