"""Human approval: nothing is published until a person approves; rejections are kept with
reasons; a version is published once, however often it is approved."""

import pytest
from dagster import AssetKey, DagsterInstance

from ai_pipelines.definitions import build_definitions
from resources.retrieval.index_sync import collection_name
from resources.storage.approvals import ApprovalLog
from tests.conftest import run_digest_job

pytestmark = pytest.mark.integration


def decide(settings, instance, **config):
    job = build_definitions(settings).resolve_job_def("publish_job")
    return job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"published_digest": {"config": config}}},
    )


def published(result):
    return [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey("published_digest")]


@pytest.mark.reliability
def test_unapproved_summaries_are_not_published_and_approved_ones_are(settings):
    instance = DagsterInstance.ephemeral()
    digest_run = run_digest_job(settings, instance)
    assert digest_run.success and not published(digest_run)
    pipeline = build_definitions(settings).resources["pipeline"]
    published_dir = settings.output_dir / "published"
    assert not published_dir.exists()

    outdated = decide(settings, instance, approver="ben", decision="approve", summaries_version="0000")
    assert not outdated.success and not published_dir.exists()

    rejected = decide(settings, instance, approver="ana@example.com", decision="reject", reason="Tone too upbeat")
    assert rejected.success and not published(rejected) and not published_dir.exists()

    no_reason = decide(settings, instance, approver="ana@example.com", decision="reject")
    assert not no_reason.success

    approved = decide(settings, instance, approver="ben@example.com", decision="approve")
    [event] = published(approved)
    metadata = event.materialization.metadata
    assert metadata["approver"].value == "ben@example.com" and metadata["approved_at"].value
    [path] = published_dir.iterdir()
    assert "Approved by ben@example.com" in path.read_text()

    log = ApprovalLog(pipeline).all()
    assert [(a.approver, a.decision, a.reason) for a in log] == [
        ("ana@example.com", "reject", "Tone too upbeat"),
        ("ben@example.com", "approve", ""),
    ]
    assert log[0].summaries_version == log[1].summaries_version == metadata["summaries_version"].value

    # Publishing is done once per version: approving again (a re-executed run, a second click)
    # leaves one published file and one approval, and says it was already published.
    again = decide(settings, instance, approver="carla@example.com", decision="approve")
    [event] = published(again)
    assert event.materialization.metadata["already_published"].value is True
    assert event.materialization.metadata["approver"].value == "ben@example.com"
    assert list(published_dir.iterdir()) == [path] and "Approved by ben@example.com" in path.read_text()
    assert len(ApprovalLog(pipeline).all()) == 2

    # Index writes done twice give one index.
    defs = build_definitions(settings)
    vector_store = defs.resources["vector_store"]
    collection = collection_name("chunks", vector_store.embeddings.model_id)
    before = vector_store.ids(collection)
    for _ in range(2):
        assert defs.resolve_job_def("index_job").execute_in_process(instance=instance).success
    assert vector_store.ids(collection) == before
