"""The inbox sensor, evaluated with build_sensor_context against a real instance, and its
run requests executed in process: new, unchanged, edited and removed files."""

import os
from pathlib import Path

import pytest
from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    DagsterInstance,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    SensorResult,
    build_sensor_context,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ai_pipelines.definitions import build_definitions, build_resources
from assets.components.partitions import DOCUMENT_BATCHES, DOCUMENTS
from resources.documents.batches import batch_of, batches_of
from sensors import inbox_sensor
from tests.conftest import article, materialization_metadata, partition_metadata, warehouse_query, write_file

pytestmark = pytest.mark.integration


class Inbox:
    """Ticks the sensor the way the daemon does: same instance, cursor carried over,
    partition requests applied before the run requests are launched."""

    def __init__(self, settings, instance: DagsterInstance):
        self.settings = settings
        self.instance = instance
        self.cursor: str | None = None
        self.defs = build_definitions(settings)

    def tick(self) -> SensorResult:
        context = build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"pipeline": build_resources(self.settings)["pipeline"]},
        )
        result = inbox_sensor(context)
        assert isinstance(result, SensorResult)
        self.cursor = result.cursor or self.cursor
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            elif isinstance(request, DeleteDynamicPartitionsRequest):
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(request.partitions_def_name, key)
        return result

    def execute(self, request: RunRequest):
        job = self.defs.resolve_job_def(request.job_name)
        result = job.execute_in_process(
            instance=self.instance, partition_key=request.partition_key, tags=dict(request.tags), raise_on_error=False
        )
        assert result.success
        return result


def added(result: SensorResult) -> list[str]:
    return [
        k
        for r in result.dynamic_partitions_requests or []
        if isinstance(r, AddDynamicPartitionsRequest)
        for k in r.partition_keys
    ]


def deleted(result: SensorResult) -> list[str]:
    return [
        k
        for r in result.dynamic_partitions_requests or []
        if isinstance(r, DeleteDynamicPartitionsRequest)
        for k in r.partition_keys
    ]


def materialized_partitions(result, asset: str) -> list[str]:
    return sorted(e.partition for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(asset))


def write(path: Path, title: str, body: str) -> Path:
    return write_file(path, article(title, body))


@pytest.fixture
def folders(settings, tmp_path):
    corpus, inbox = tmp_path / "corpus", tmp_path / "inbox"
    corpus.mkdir()
    inbox.mkdir()
    return settings.model_copy(update={"corpus_dir": corpus, "inbox_dir": inbox}), corpus, inbox


def test_new_file_once_then_only_when_changed(folders):
    settings, _, inbox_dir = folders
    inbox = Inbox(settings, DagsterInstance.ephemeral())
    assert not inbox.tick().run_requests

    memo = write(inbox_dir / "memo.md", "Memo", "Orion Freight opened a depot in Leeds. It employs 40 people.")
    first = inbox.tick()
    assert added(first) == ["inbox/memo.md"]
    [request] = first.run_requests
    assert (request.job_name, request.partition_key) == ("document_job", batch_of("inbox/memo.md"))

    # Seen twice, processed once: no partition, no run, even when only its mtime moves.
    assert not inbox.tick().run_requests
    os.utime(memo, ns=(memo.stat().st_atime_ns, memo.stat().st_mtime_ns + 5_000_000_000))
    again = inbox.tick()
    assert not again.run_requests and not added(again)

    write(inbox_dir / "memo.md", "Memo", "Orion Freight opened a depot in York. It employs 55 people.")
    changed = inbox.tick()
    assert not added(changed)
    [rerun] = changed.run_requests
    assert rerun.partition_key == batch_of("inbox/memo.md") and rerun.run_key != request.run_key

    # Back to the first content: processed again, under a run key not used before.
    write(inbox_dir / "memo.md", "Memo", "Orion Freight opened a depot in Leeds. It employs 40 people.")
    [reverted] = inbox.tick().run_requests
    assert reverted.run_key not in {request.run_key, rerun.run_key}


def test_files_arriving_together_are_one_run_over_their_range(folders):
    settings, _, inbox_dir = folders
    inbox = Inbox(settings, DagsterInstance.ephemeral())
    for name in ["a.md", "b.md", "c.md"]:
        write(inbox_dir / name, name, f"Report {name} says Kestrel Labs shipped {len(name)} units.")
    result = inbox.tick()
    assert added(result) == ["inbox/a.md", "inbox/b.md", "inbox/c.md"]
    [request] = result.run_requests
    batches = batches_of(added(result))
    assert len(batches) > 1 and request.partition_key is None  # these three keys hash to different batches
    assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        batches[0],
        batches[-1],
    )
    run = inbox.execute(request)
    keys = DOCUMENT_BATCHES.get_partition_keys()
    assert materialized_partitions(run, "signals") == keys[keys.index(batches[0]) : keys.index(batches[-1]) + 1]
    named = {d for m in partition_metadata(run, "signals").values() for d in m["document_status"]}
    assert named == {"inbox/a.md", "inbox/b.md", "inbox/c.md"}


def test_removed_file_leaves_the_registry_its_batch_and_the_index(folders):
    settings, corpus_dir, _ = folders
    write(corpus_dir / "keep.md", "Keep", "Harbor Bank raised its dividend to 3 percent in March.")
    gone = write(corpus_dir / "gone.md", "Gone", "Tallis Mining closed its Perth office after 12 years.")
    instance = DagsterInstance.ephemeral()
    inbox = Inbox(settings, instance)
    [ingest] = inbox.tick().run_requests
    inbox.execute(ingest)
    index = inbox.defs.resolve_job_def("index_job").execute_in_process(instance=instance)
    assert materialization_metadata(index, "retrieval_index")["chunks"] == 2

    gone.unlink()
    result = inbox.tick()
    assert deleted(result) == ["corpus/gone.md"]
    [rerun, refresh] = result.run_requests
    assert (rerun.job_name, rerun.partition_key, refresh.job_name) == (
        "document_job",
        batch_of("corpus/gone.md"),
        "index_job",
    )
    assert instance.get_dynamic_partitions(DOCUMENTS.name) == ["corpus/keep.md"]
    inbox.execute(rerun)  # its batch again, without it: its rows leave the tables
    documents = {d for (d,) in warehouse_query(settings, "select document from ai_pipelines.source_documents")}
    assert documents == {"corpus/keep.md"}
    refreshed = materialization_metadata(inbox.execute(refresh), "retrieval_index")
    assert (refreshed["chunks"], refreshed["removed_this_run"]) == (1, 1)


def test_one_new_document_in_a_corpus_of_500_is_the_only_one_processed(folders, llm):
    settings, corpus_dir, inbox_dir = folders
    for i in range(500):
        write(
            corpus_dir / f"note-{i:03d}.md",
            f"Note {i}",
            f"Ledger entry {i} records {i * 7 + 3} crates shipped by Quill Transport.",
        )
    instance = DagsterInstance.ephemeral()
    inbox = Inbox(settings, instance)
    [backfill] = inbox.tick().run_requests  # the initial corpus: one run over every batch
    first = inbox.execute(backfill)
    assert llm.calls_for("ExtractedSignals") == 500
    assert materialized_partitions(first, "chunks") == DOCUMENT_BATCHES.get_partition_keys()
    assert sum(m["documents"] for m in partition_metadata(first, "chunks").values()) == 500
    inbox.defs.resolve_job_def("index_job").execute_in_process(instance=instance)

    write(inbox_dir / "late.md", "Late", "Quill Transport hired 30 drivers. The hires start in May. They cover Leeds.")
    llm.reset()
    result = inbox.tick()
    assert added(result) == ["inbox/late.md"]
    [request] = result.run_requests
    run = inbox.execute(request)
    # Its batch, whose other documents the cache answers: one model call, for the new document.
    assert llm.calls_for("ExtractedSignals") == 1
    assert materialized_partitions(run, "chunks") == [batch_of("inbox/late.md")]
    neighbours = sum(batch_of(f"corpus/note-{i:03d}.md") == batch_of("inbox/late.md") for i in range(500))
    signals = materialization_metadata(run, "signals")
    assert materialization_metadata(run, "chunks")["documents"] == signals["documents"] == neighbours + 1
    assert "inbox/late.md" in signals["document_status"]
    assert signals["model_requests"] == neighbours + 1 and signals["cache_hits"] == neighbours

    index = materialization_metadata(
        inbox.defs.resolve_job_def("index_job").execute_in_process(instance=instance), "retrieval_index"
    )
    assert (index["chunks"], index["embedded_this_run"], index["removed_this_run"]) == (501, 1, 0)
