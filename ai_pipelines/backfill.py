"""The corpus in one run: register every file in the documents registry, then launch
the digest job over a range of document batches: every batch (`run_over_all_documents`,
what the tests and the check gate do), or only the batches whose documents changed since
the last run (`run_what_changed`, what `ai-pipelines run` does; see run_plan).

One run, not one per batch,
means one process and one model server whose assets fan out over every document;
the UI's equivalent is a backfill of all batches, which the assets' single-run
backfill policy also turns into one run. The run executes in this process, and says
so in its tags, so that a later process can tell when it was killed (run_recovery).
"""

from __future__ import annotations

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, JobDefinition
from pydantic import BaseModel

from ai_pipelines.run_plan import SETTINGS_TAG, RunPlan, plan_run, settings_fingerprint
from ai_pipelines.run_process import RunProcess
from assets.components.partitions import DOCUMENT_BATCHES, DOCUMENTS, range_tags
from resources.documents.batches import batches_of
from resources.documents.files import FileState, is_valid_key, scan, watched_folders
from resources.pipeline_config import PipelineConfig


class NoDocumentsError(RuntimeError):
    pass


class RegisteredDocuments(BaseModel):
    keys: list[str]
    files: dict[str, FileState]
    added: list[str]
    removed: list[str]
    skipped: list[str]


def register_documents(instance: DagsterInstance, pipeline: PipelineConfig) -> RegisteredDocuments:
    """Make the documents registry match the files in the watched folders."""
    files = scan(pipeline)
    found = sorted(files)
    keys = [k for k in found if is_valid_key(k)]
    registered = instance.get_dynamic_partitions(DOCUMENTS.name)
    known, present = set(registered), set(keys)
    added = [k for k in keys if k not in known]
    removed = [k for k in registered if k not in present]
    for key in removed:
        instance.delete_dynamic_partition(DOCUMENTS.name, key)
    if added:
        instance.add_dynamic_partitions(DOCUMENTS.name, added)
    return RegisteredDocuments(
        keys=keys,
        files={k: files[k] for k in keys},
        added=added,
        removed=removed,
        skipped=sorted(set(found) - set(keys)),
    )


def all_documents_tags(instance: DagsterInstance) -> dict[str, str]:
    """Tags for one run over every batch holding a registered document (and the empty
    batches between them, which cost a step's bookkeeping and no more)."""
    batches = batches_of(instance.get_dynamic_partitions(DOCUMENTS.name)) or DOCUMENT_BATCHES.get_partition_keys()
    return range_tags(batches)


def _registered(instance: DagsterInstance, pipeline: PipelineConfig) -> RegisteredDocuments:
    documents = register_documents(instance, pipeline)
    if not documents.keys:
        folders = " or ".join(str(p) for p in watched_folders(pipeline).values())
        raise NoDocumentsError(f"no documents to process: no files in {folders}")
    return documents


def _run_tags(pipeline: PipelineConfig, execute_kwargs: dict) -> dict[str, str]:
    return {
        **execute_kwargs.pop("tags", {}),
        SETTINGS_TAG: settings_fingerprint(pipeline),
        **RunProcess.current().tags(),
    }


def run_over_all_documents(
    job: JobDefinition, instance: DagsterInstance, pipeline: PipelineConfig, **execute_kwargs
) -> ExecuteInProcessResult:
    """Register the corpus and execute `job` in this process over every document."""
    _registered(instance, pipeline)
    tags = {**_run_tags(pipeline, execute_kwargs), **all_documents_tags(instance)}
    return job.execute_in_process(instance=instance, tags=tags, **execute_kwargs)


def run_what_changed(
    defs: Definitions, instance: DagsterInstance, pipeline: PipelineConfig, everything: bool = False, **execute_kwargs
) -> tuple[RunPlan, ExecuteInProcessResult | None]:
    """Register the corpus and run only what is new, changed or out of date (everything
    when `everything`): the digest job over the range of documents to redo, the refresh
    job when only downstream assets are out of date, or no run at all."""
    documents = _registered(instance, pipeline)
    order = instance.get_dynamic_partitions(DOCUMENTS.name)
    plan = (
        RunPlan.everything(order)
        if everything
        else plan_run(instance, defs, pipeline, documents.files, order, documents.removed)
    )
    if plan.up_to_date:
        return plan, None
    tags = _run_tags(pipeline, execute_kwargs)
    if plan.batches:
        job, tags = defs.resolve_job_def("digest_job"), {**tags, **plan.range_tags()}
    else:
        job = defs.resolve_job_def("digest_refresh_job")
    return plan, job.execute_in_process(instance=instance, tags=tags, **execute_kwargs)
