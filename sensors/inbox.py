"""The inbox sensor: documents dropped into a watched folder become registered documents and runs.

Its cursor is the content hash of every file it has handed to a run, so a file seen
twice is processed once, an edited file is processed again (its batch, whose other
documents the response cache answers), and a removed file leaves the registry, its
batch is re-run without it and the index brought in line. Every file a tick found new,
changed or removed goes to one run over the range of their batches: a thousand files
dropped at once are one run with bounded fan-out, not a thousand processes.
"""

import hashlib

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from pydantic import BaseModel

from assets.components.partitions import DOCUMENTS, range_tags
from assets.digest.ingestion import CONTENT_HASHES
from resources.documents.batches import batch_of, batches_of
from resources.documents.files import FileState, is_valid_key, scan
from resources.pipeline_config import PipelineConfig
from sensors.jobs import document_job, index_job


class InboxCursor(BaseModel):
    files: dict[str, FileState] = {}
    requests: int = 0  # numbers run keys, so a file that returns to earlier content still runs

    @classmethod
    def read(cls, stored: str | None) -> "InboxCursor":
        """The cursor a sensor stored on its last tick; an empty one on its first."""
        return cls.model_validate_json(stored) if stored else cls()

    def after_tick(self, files: dict[str, FileState], requests: int = 0) -> str:
        """The cursor to store after a tick, as JSON: the files as they are now, the request
        count moved on by the runs the tick requested."""
        return InboxCursor(files=files, requests=self.requests + requests).model_dump_json()


class InboxChanges(BaseModel):
    new: list[str]
    changed: list[str]
    removed: list[str]


def compare(previous: dict[str, FileState], current: dict[str, FileState]) -> InboxChanges:
    return InboxChanges(
        new=sorted(current.keys() - previous.keys()),
        changed=sorted(k for k in current.keys() & previous.keys() if current[k].sha256 != previous[k].sha256),
        removed=sorted(previous.keys() - current.keys()),
    )


def numbered_run_key(cursor: InboxCursor, *parts: str) -> str:
    """A run key from what is being run and the cursor's request count (see `InboxCursor.requests`)."""
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"{cursor.requests}:{digest}"


def adopt_materialized(
    instance: DagsterInstance,
    changes: InboxChanges,
    registered: set[str],
    current: dict[str, FileState],
    asset: str = "source_documents",
) -> set[str]:
    """Takes out of `changes.new` the registered partitions whose `asset` was materialized after
    their file was last modified (by the run command, or before this sensor's cursor was reset),
    and returns them: adopting them spares a run each."""
    keys = [k for k in changes.new if k in registered]
    if not keys:
        return set()
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=keys),
        limit=10 * len(keys) + 100,
        ascending=False,
    ).records
    latest: dict[str, float] = {}
    for record in records:
        if record.partition_key and record.partition_key not in latest:
            latest[record.partition_key] = record.timestamp
    adopted = {k for k in keys if k in latest and latest[k] * 1e9 >= current[k].mtime_ns}
    changes.new = [k for k in changes.new if k not in adopted]
    return adopted


def partition_run_requests(
    job_name: str, changes: InboxChanges, current: dict[str, FileState], registered: set[str], cursor: InboxCursor
) -> tuple[list[RunRequest], list[str]]:
    """Runs of `job_name` for new and changed files, and the keys to register as partitions:
    unregistered files together (one partition, or one range: they are registered together,
    so they sit next to each other at the end of the partition order), known partitions
    whose content is new to the sensor one run each."""
    unregistered = [k for k in changes.new if k not in registered]
    rerun = sorted(set(changes.changed) | (set(changes.new) & registered))
    requests = []
    if len(unregistered) == 1:
        [key] = unregistered
        requests.append(
            RunRequest(job_name=job_name, partition_key=key, run_key=numbered_run_key(cursor, key, current[key].sha256))
        )
    elif unregistered:
        requests.append(
            RunRequest(
                job_name=job_name,
                run_key=numbered_run_key(cursor, *(f"{k}@{current[k].sha256}" for k in unregistered)),
                tags=range_tags(unregistered),
            )
        )
    for key in rerun:
        requests.append(
            RunRequest(job_name=job_name, partition_key=key, run_key=numbered_run_key(cursor, key, current[key].sha256))
        )
    return requests, unregistered


def adopt_ingested(instance: DagsterInstance, changes: InboxChanges, current: dict[str, FileState]) -> set[str]:
    """Takes out of `changes.new` the documents whose batch's latest `source_documents`
    materialization already recorded their content (ingested by the run command, or before
    this sensor's cursor was reset), and returns them: adopting them spares a run."""
    batches = batches_of(changes.new)
    if not batches:
        return set()
    recorded: dict[str, dict] = {}
    for record in instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("source_documents"), asset_partitions=batches),
        limit=10 * len(batches) + 100,
        ascending=False,
    ).records:
        materialization = record.asset_materialization
        if record.partition_key and record.partition_key not in recorded and materialization is not None:
            hashes = materialization.metadata.get(CONTENT_HASHES)
            recorded[record.partition_key] = hashes.value if hashes is not None else {}
    adopted = {
        k for k in changes.new if recorded.get(batch_of(k), {}).get(k) == current[k].sha256[:16] and current[k].sha256
    }
    changes.new = [k for k in changes.new if k not in adopted]
    return adopted


def batch_run_request(changes: InboxChanges, current: dict[str, FileState], cursor: InboxCursor) -> RunRequest | None:
    """One run over the batches of every new, changed and removed file (one batch, or the
    range from the first to the last of them), or None when there is none."""
    touched = sorted({*changes.new, *changes.changed, *changes.removed})
    batches = batches_of(touched)
    if not batches:
        return None
    run_key = numbered_run_key(cursor, *(f"{k}@{current[k].sha256 if k in current else 'removed'}" for k in touched))
    if len(batches) == 1:
        return RunRequest(job_name=document_job.name, partition_key=batches[0], run_key=run_key)
    return RunRequest(job_name=document_job.name, run_key=run_key, tags=range_tags(batches))


def plan_runs(
    changes: InboxChanges, current: dict[str, FileState], registered: set[str], cursor: InboxCursor
) -> tuple[list[RunRequest], list[str]]:
    """The run requests for one tick, and the keys to register."""
    request = batch_run_request(changes, current, cursor)
    requests = [request] if request else []
    unregistered = [k for k in changes.new if k not in registered]
    if changes.removed:
        requests.append(
            RunRequest(job_name=index_job.name, run_key=numbered_run_key(cursor, "removed", *changes.removed))
        )
    return requests, unregistered


def folder_changes(
    context: SensorEvaluationContext, cursor: InboxCursor, found: dict[str, FileState], noun: str
) -> tuple[dict[str, FileState], InboxChanges, SensorResult | None]:
    """A watched folder's files that can be partition keys, how they changed since the
    cursor, and the skip result to return when nothing did (shared by the inbox sensors)."""
    invalid = sorted(k for k in found if not is_valid_key(k))
    for key in invalid:
        context.log.warning(f"Skipping {key!r}: Dagster partition keys cannot contain '...' or control characters")
    current = {k: v for k, v in found.items() if k not in invalid}
    changes = compare(cursor.files, current)
    if changes.new or changes.changed or changes.removed:
        return current, changes, None
    return (
        current,
        changes,
        SensorResult(
            skip_reason=SkipReason(f"No new, changed or removed {noun} among {len(current)} files"),
            cursor=cursor.after_tick(current),
        ),
    )


@sensor(
    name="inbox_sensor",
    jobs=[document_job, index_job],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description="Registers new files in the corpus and inbox folders as documents and runs document_job over "
    "the batches of new, edited and removed files; unregisters removed files and refreshes the index.",
)
def inbox_sensor(context: SensorEvaluationContext, pipeline: PipelineConfig):
    cursor = InboxCursor.read(context.cursor)
    current, changes, unchanged = folder_changes(context, cursor, scan(pipeline, cursor.files), "documents")
    if unchanged is not None:
        return unchanged
    registered = set(context.instance.get_dynamic_partitions(DOCUMENTS.name))
    adopted = adopt_ingested(context.instance, changes, current)
    requests, to_register = plan_runs(changes, current, registered, cursor)
    to_register += sorted(adopted - registered)
    gone = [k for k in changes.removed if k in registered]
    context.log.info(
        f"{len(changes.new)} new, {len(changes.changed)} changed, {len(changes.removed)} removed documents, "
        f"{len(adopted)} already ingested; {len(requests)} run requests"
    )
    partition_requests = []
    if to_register:
        partition_requests.append(AddDynamicPartitionsRequest(DOCUMENTS.name, to_register))
    if gone:
        partition_requests.append(DeleteDynamicPartitionsRequest(DOCUMENTS.name, gone))
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partition_requests,
        cursor=cursor.after_tick(current, len(requests)),
    )
