"""The whole corpus in one run: register every file as a documents partition, then
launch the digest job over the full partition range.

This is what `ai-pipelines run` and the tests do. One run, not one per document,
means one process and one model server whose assets fan out over every document;
the UI's equivalent is a backfill of all partitions, which the assets' single-run
backfill policy also turns into one run. The run executes in this process, and says
so in its tags, so that a later process can tell when it was killed (run_recovery).
"""

from __future__ import annotations

from dagster import DagsterInstance, ExecuteInProcessResult, JobDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from pydantic import BaseModel

from ai_pipelines.run_process import RunProcess
from assets.config import PipelineConfig
from assets.documents import DOCUMENTS, is_valid_key, scan, watched_folders


class NoDocumentsError(RuntimeError):
    pass


class RegisteredDocuments(BaseModel):
    keys: list[str]
    added: list[str]
    removed: list[str]
    skipped: list[str]


def register_documents(instance: DagsterInstance, pipeline: PipelineConfig) -> RegisteredDocuments:
    """Make the documents partitions match the files in the watched folders."""
    found = sorted(scan(pipeline))
    keys = [k for k in found if is_valid_key(k)]
    registered = instance.get_dynamic_partitions(DOCUMENTS.name)
    added = [k for k in keys if k not in set(registered)]
    removed = [k for k in registered if k not in set(keys)]
    for key in removed:
        instance.delete_dynamic_partition(DOCUMENTS.name, key)
    if added:
        instance.add_dynamic_partitions(DOCUMENTS.name, added)
    return RegisteredDocuments(keys=keys, added=added, removed=removed, skipped=sorted(set(found) - set(keys)))


def all_documents_tags(instance: DagsterInstance) -> dict[str, str]:
    keys = instance.get_dynamic_partitions(DOCUMENTS.name)
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}


def run_over_all_documents(
    job: JobDefinition, instance: DagsterInstance, pipeline: PipelineConfig, **execute_kwargs
) -> ExecuteInProcessResult:
    """Register the corpus and execute `job` in this process over every document."""
    documents = register_documents(instance, pipeline)
    if not documents.keys:
        folders = " or ".join(str(p) for p in watched_folders(pipeline).values())
        raise NoDocumentsError(f"no documents to process: no files in {folders}")
    tags = {**execute_kwargs.pop("tags", {}), **all_documents_tags(instance), **RunProcess.current().tags()}
    return job.execute_in_process(instance=instance, tags=tags, **execute_kwargs)
