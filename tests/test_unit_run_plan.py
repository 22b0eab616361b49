"""Run planning against an instance's records, without running anything: the materializations
a run would have left are reported straight to an in-memory instance, with the code versions
and content hashes the plan compares. What is current, what is stale and why, and that the
history is read only as far back as the plan needs."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    MetadataValue,
    asset,
)
from dagster._core.utils import make_new_run_id

import ai_pipelines.run_plan as run_plan
from ai_pipelines.run_plan import (
    CODE_VERSION_TAG,
    DOWNSTREAM_ASSETS,
    PER_DOCUMENT_ASSETS,
    SETTINGS_TAG,
    RunPlan,
    latest_materializations,
    plan_run,
    runs_with_other_settings,
)
from assets.components.partitions import DOCUMENT_BATCHES
from assets.digest.ingestion import CONTENT_HASHES
from resources.documents.batches import batch_of
from resources.documents.files import FileState
from resources.pipeline_config import PipelineConfig

pytestmark = pytest.mark.unit

DefsAndPipeline = tuple[Definitions, PipelineConfig]
ORDER = ["corpus/a.md", "corpus/b.md"]


def file(content: str) -> FileState:
    return FileState(sha256=(content * 64)[:64], size=10, mtime_ns=1)


# The shape of the digest's graph, with code versions of the test's own: the plan reads only names,
# code versions and dependencies, so the real code location need not load.
GRAPH = {
    "source_documents": [],
    "chunks": ["source_documents"],
    "signals": ["source_documents", "chunks"],
    "retrieval_index": ["chunks"],
    "drafts": ["signals", "retrieval_index"],
    "fact_checks": ["drafts", "retrieval_index"],
    "draft_revisions": ["fact_checks"],
    "summaries": ["draft_revisions", "signals"],
    "digest_report": ["summaries", "fact_checks", "draft_revisions"],
}
A, B = ORDER
assert batch_of(A) != batch_of(B)  # the tests below tell the two documents' batches apart


def stand_in(name: str, deps: list[str]) -> AssetsDefinition:
    @asset(
        name=name,
        deps=deps,
        code_version=f"{name}-v1",
        partitions_def=DOCUMENT_BATCHES if name in PER_DOCUMENT_ASSETS else None,
    )
    def _stand_in() -> None: ...

    return _stand_in


@pytest.fixture(scope="module")
def defs_and_pipeline() -> DefsAndPipeline:
    assert set(GRAPH) == {*PER_DOCUMENT_ASSETS, *DOWNSTREAM_ASSETS}
    return Definitions(assets=[stand_in(name, deps) for name, deps in GRAPH.items()]), PipelineConfig()


class Records:
    """An in-memory instance and the materializations a run would have recorded in it."""

    def __init__(self, defs: Definitions):
        self.instance = DagsterInstance.ephemeral()
        self.defs = defs
        self.batches: dict[str, dict[str, str]] = {}

    def code(self, name: str) -> str:
        return self.defs.resolve_assets_def(name).code_versions_by_key[AssetKey(name)] or ""

    def materialize(
        self, name: str, partition: str | None = None, code: str | None = None, hashes: dict[str, str] | None = None
    ) -> None:
        metadata = {CONTENT_HASHES: MetadataValue.json(hashes)} if hashes is not None else {}
        self.instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key=name,
                partition=partition,
                metadata=metadata,
                tags={CODE_VERSION_TAG: code or self.code(name)},
            )
        )

    def document(self, key: str, content: str) -> None:
        """A run over the document's batch, which records every document the batch holds."""
        batch = batch_of(key)
        self.batches.setdefault(batch, {})[key] = file(content).sha256[:16]
        self.materialize("source_documents", batch, hashes=self.batches[batch])
        self.materialize("chunks", batch)
        self.materialize("signals", batch)

    def downstream(self) -> None:
        for name in DOWNSTREAM_ASSETS:  # in dependency order
            self.materialize(name)


@pytest.fixture
def records(defs_and_pipeline: DefsAndPipeline) -> Records:
    return Records(defs_and_pipeline[0])


def plan(records: Records, pipeline: PipelineConfig, files: dict[str, FileState], removed: list[str] = ()) -> RunPlan:
    return plan_run(records.instance, records.defs, pipeline, files, sorted(files), list(removed))


@pytest.fixture
def current(records: Records) -> Records:
    """Both documents and everything downstream materialized, in order, with today's code."""
    records.document("corpus/a.md", "a")
    records.document("corpus/b.md", "b")
    records.downstream()
    return records


def test_nothing_recorded_is_everything_to_do(records: Records, defs_and_pipeline: DefsAndPipeline) -> None:
    result = plan(records, defs_and_pipeline[1], {"corpus/a.md": file("a"), "corpus/b.md": file("b")})
    assert result.documents == ORDER and result.refresh_downstream
    assert result.batches == sorted([batch_of(A), batch_of(B)])
    assert result.reason == f"2 of 2 documents new or changed, in 2 batches; to refresh: {', '.join(DOWNSTREAM_ASSETS)}"


def test_what_is_recorded_with_todays_content_and_code_is_up_to_date(
    current: Records, defs_and_pipeline: DefsAndPipeline
) -> None:
    result = plan(current, defs_and_pipeline[1], {"corpus/a.md": file("a"), "corpus/b.md": file("b")})
    assert result.up_to_date and result.reason == "all 2 documents and every downstream asset are up to date"


def test_an_edited_file_is_redone_with_everything_downstream(
    current: Records, defs_and_pipeline: DefsAndPipeline
) -> None:
    result = plan(current, defs_and_pipeline[1], {"corpus/a.md": file("a"), "corpus/b.md": file("B")})
    assert result.documents == [B] and result.batches == [batch_of(B)] and result.refresh_downstream
    assert result.reason == "1 of 2 documents new or changed, in 1 batch"


def test_a_document_whose_chunks_have_other_code_or_are_newer_than_its_signals_is_redone(
    current: Records, defs_and_pipeline: DefsAndPipeline
) -> None:
    files = {"corpus/a.md": file("a"), "corpus/b.md": file("b")}
    current.materialize("chunks", batch_of(A), code="an older code version")
    assert plan(current, defs_and_pipeline[1], files).batches == [batch_of(A)]
    current.materialize("chunks", batch_of(A))  # today's code, but now after the signals it fed
    assert plan(current, defs_and_pipeline[1], files).documents == [A]
    current.materialize("signals", batch_of(A))
    assert plan(current, defs_and_pipeline[1], files).batches == []


def test_a_downstream_asset_older_than_what_it_reads_is_refreshed_alone(
    current: Records, defs_and_pipeline: DefsAndPipeline
) -> None:
    current.materialize("retrieval_index")  # re-indexed after the drafts were written from the old index
    result = plan(current, defs_and_pipeline[1], {"corpus/a.md": file("a"), "corpus/b.md": file("b")})
    assert result.documents == [] and result.refresh_downstream
    refreshed = result.reason.removeprefix("to refresh: ").split(", ")
    assert "retrieval_index" not in refreshed and "drafts" in refreshed


def test_a_downstream_asset_with_other_code_is_refreshed(current: Records, defs_and_pipeline: DefsAndPipeline) -> None:
    current.materialize("digest_report", code="0-old")
    result = plan(current, defs_and_pipeline[1], {"corpus/a.md": file("a"), "corpus/b.md": file("b")})
    assert result.reason == "to refresh: digest_report"


def test_a_removed_document_redoes_its_batch_without_it(current: Records, defs_and_pipeline: DefsAndPipeline) -> None:
    result = plan(current, defs_and_pipeline[1], {"corpus/a.md": file("a")}, removed=["corpus/b.md"])
    assert result.documents == [] and result.batches == [batch_of(B)]
    assert result.refresh_downstream and result.reason == "1 removed"


def test_only_runs_tagged_with_other_settings_count_as_other_settings() -> None:
    instance = DagsterInstance.ephemeral()

    def run(tags: dict[str, str]) -> str:
        return instance.add_run(
            DagsterRun(job_name="digest_job", run_id=make_new_run_id(), status=DagsterRunStatus.SUCCESS, tags=tags)
        ).run_id

    same, other, untagged = run({SETTINGS_TAG: "f1"}), run({SETTINGS_TAG: "f0"}), run({})
    assert runs_with_other_settings(instance, {same, other, untagged, "not-a-run"}, "f1") == {other}
    assert runs_with_other_settings(instance, set(), "f1") == set()


def test_the_latest_materialization_of_each_partition_is_read_newest_first_and_only_as_far_as_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instance = DagsterInstance.ephemeral()
    for partition, content in [("corpus/a.md", "1"), ("corpus/b.md", "2"), ("corpus/c.md", "3"), ("corpus/a.md", "4")]:
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key="source_documents",
                partition=partition,
                metadata={CONTENT_HASHES: MetadataValue.json({partition: content})},
                tags={CODE_VERSION_TAG: "v" + content},
            )
        )
    pages: list[int] = []
    fetch = instance.fetch_materializations

    def counted(*args: Any, **kwargs: Any) -> Any:
        pages.append(1)
        return fetch(*args, **kwargs)

    monkeypatch.setattr(instance, "fetch_materializations", counted)
    monkeypatch.setattr(run_plan, "_PAGE", 1)
    # a.md's latest is the newest record: one page, even with a partition that never materialized.
    latest = latest_materializations(instance, "source_documents", {"corpus/a.md", "corpus/new.md"})
    assert pages == [1] and (latest["corpus/a.md"].content_hashes, latest["corpus/a.md"].code_version) == (
        {"corpus/a.md": "4"},
        "v4",
    )
    pages.clear()
    latest = latest_materializations(instance, "source_documents", {"corpus/a.md", "corpus/b.md"})
    assert len(pages) == 3  # newest first: a (4), c, b
    assert {k: v.content_hashes[k] for k, v in latest.items() if k in ("corpus/a.md", "corpus/b.md")} == {
        "corpus/a.md": "4",
        "corpus/b.md": "2",
    }
    assert latest["corpus/b.md"].storage_id < latest["corpus/a.md"].storage_id
