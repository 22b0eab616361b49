"""Declarative automation: a new document refreshes the index, and only a changed index
(a new data version) re-checks the facts; an unchanged index re-checks nothing."""

import pytest
from dagster import AssetKey, DagsterInstance, evaluate_automation_conditions
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from ai_pipelines.definitions import build_definitions
from assets.components.partitions import DOCUMENTS
from resources.documents.batches import batch_of
from tests.conftest import run_digest_job

pytestmark = pytest.mark.integration

INDEX, FACT_CHECKS = AssetKey("retrieval_index"), AssetKey("fact_checks")


def requested(result) -> set[str]:
    return {key.to_user_string() for key in [INDEX, FACT_CHECKS] if result.get_num_requested(key)}


def test_index_follows_documents_and_fact_checks_follow_the_index(settings):
    instance = DagsterInstance.ephemeral()
    assert run_digest_job(settings, instance).success
    defs = build_definitions(settings)
    tick = evaluate_automation_conditions(defs=defs, instance=instance)
    assert requested(tick) == set()

    note = settings.data_dir / "inbox" / "note.md"
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text("# Note\n\nMeridian Rail ordered 12 trains from Alder Works. Delivery starts in 2027.\n")
    instance.add_dynamic_partitions(DOCUMENTS.name, ["inbox/note.md"])
    assert (
        defs.resolve_job_def("document_job")
        .execute_in_process(instance=instance, partition_key=batch_of("inbox/note.md"))
        .success
    )
    tick = evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert requested(tick) == {"retrieval_index"}

    assert defs.resolve_job_def("index_job").execute_in_process(instance=instance).success
    tick = evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert requested(tick) == {"fact_checks"}
    # The index changed under the drafts, so the UI shows them stale until a person or the schedule redoes them.
    assert get_stale_status_resolver(instance, defs.assets).get_status(AssetKey("drafts")) == StaleStatus.STALE

    fact_checks = defs.resolve_job_def("digest_job").execute_in_process(
        instance=instance, asset_selection=[FACT_CHECKS]
    )
    assert fact_checks.success
    tick = evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert requested(tick) == set()

    # The same chunks give the same index version: nothing downstream is re-checked.
    assert defs.resolve_job_def("index_job").execute_in_process(instance=instance).success
    tick = evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert requested(tick) == set()


def test_daily_schedule_rebuilds_the_digest_from_ingested_documents(settings):
    from dagster import build_schedule_context

    instance = DagsterInstance.ephemeral()
    assert run_digest_job(settings, instance).success
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("daily_digest")
    [request] = schedule.evaluate_tick(build_schedule_context(instance=instance)).run_requests
    job = defs.resolve_job_def(schedule.job_name)
    run = job.execute_in_process(instance=instance, tags=dict(request.tags))
    assert run.success
    assert {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()} == {
        "retrieval_index",
        "drafts",
        "fact_checks",
        "draft_revisions",
        "summaries",
        "summary_headlines",
        "digest_report",
    }
