"""The run command materializes only what changed: new and edited documents, what
depends on them, and everything after a settings change; nothing when nothing changed."""

import shutil

import pytest
from dagster import DagsterInstance

from ai_pipelines.backfill import run_what_changed
from ai_pipelines.definitions import build_definitions, build_resources
from ai_pipelines.instance import instance_yaml
from resources.documents.batches import batch_of
from tests.conftest import DATA, warehouse_rows

# Tiers, marked per test: the plan's pure parts are unit; runs over a corpus, integration.


@pytest.mark.integration
def test_runs_materialize_what_changed_and_nothing_else(tmp_path, settings, llm, monkeypatch):
    corpus = tmp_path / "corpus"
    shutil.copytree(DATA / "external_corpus", corpus)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings = settings.model_copy(
        update={"corpus_dir": corpus, "embeddings_base_url": llm.base_url, "embeddings_model": "hashed"}
    )
    instance = DagsterInstance.get()

    def run(settings=settings, everything=False):
        llm.calls.clear()
        plan, result = run_what_changed(
            build_definitions(settings),
            instance,
            build_resources(settings)["pipeline"],
            everything,
            raise_on_error=False,
        )
        assert result is None or result.success, plan.reason
        return plan, result, [c["schema"] for c in llm.calls]

    plan, result, calls = run()
    assert len(plan.documents) == 5 and plan.refresh_downstream and calls.count("ExtractedSignals") == 5

    plan, result, calls = run()
    assert plan.up_to_date and result is None and calls == []
    assert plan.reason == "all 5 documents and every downstream asset are up to date"

    edited = corpus / "03-fares.txt"
    edited.write_text(edited.read_text() + "\nSingle fares rise to 3.10 euros in March 2027.\n")
    plan, result, calls = run()
    assert plan.documents == ["corpus/03-fares.txt"] and calls.count("ExtractedSignals") == 1
    materialized = {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"source_documents", "chunks", "signals", "retrieval_index", "digest_report"} <= materialized

    (corpus / "05-drivers-strike.txt").unlink()
    plan, result, calls = run()
    # Its batch again, without it (the cache answers the rest), and everything downstream.
    assert plan.documents == [] and plan.batches == [batch_of("corpus/05-drivers-strike.txt")]
    assert plan.refresh_downstream and "1 removed" in plan.reason
    assert "ExtractedSignals" not in calls and result.job_def.name == "digest_job"
    assert "corpus/05-drivers-strike.txt" not in {r["document"] for r in warehouse_rows(settings, "source_documents")}

    # A setting that shapes outputs but is not code: everything again (the cache answers).
    plan, result, calls = run(settings.model_copy(update={"claims_per_draft": 3}))
    assert len(plan.documents) == 4 and plan.refresh_downstream

    plan, result, calls = run(everything=True)
    assert len(plan.documents) == 4 and "as asked" in plan.reason


@pytest.mark.unit
def test_a_batch_is_current_only_with_its_code_settings_and_order_all_matching():
    from ai_pipelines.run_plan import Latest, _batch_is_current

    code = ["v1", "v2", "v3"]

    def latest(storage_id: int, code_version: str, run_id: str = "r") -> Latest:
        return Latest(storage_id=storage_id, run_id=run_id, code_version=code_version)

    current = [latest(1, "v1"), latest(2, "v2"), latest(3, "v3")]
    assert _batch_is_current(current, code, set())
    assert not _batch_is_current([current[0], None, current[2]], code, set())  # chunks never materialized
    assert not _batch_is_current([current[0], latest(2, "old"), current[2]], code, set())  # code changed
    assert not _batch_is_current([current[0], latest(4, "v2"), current[2]], code, set())  # signals older than chunks
    assert not _batch_is_current([current[0], latest(2, "v2", "other"), current[2]], code, {"other"})  # settings


@pytest.mark.unit
def test_one_range_covers_the_batches_to_redo_in_partition_order():
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from ai_pipelines.run_plan import RunPlan

    order = ["corpus/a.md", "corpus/z.md", "corpus/c.md", "corpus/b.md", "inbox/n.md"]
    everything = RunPlan.everything(order)
    assert everything.batches == sorted({batch_of(k) for k in order}) and everything.documents == order
    assert everything.range_tags() == {
        ASSET_PARTITION_RANGE_START_TAG: everything.batches[0],
        ASSET_PARTITION_RANGE_END_TAG: everything.batches[-1],
    }
    assert not everything.up_to_date
    assert RunPlan(documents=[], batches=[], refresh_downstream=False, reason="").up_to_date


@pytest.mark.unit
def test_the_settings_fingerprint_follows_settings_and_names_secrets_by_variable_only():
    from dagster import EnvVar

    from ai_pipelines.run_plan import settings_fingerprint
    from resources.pipeline_config import PipelineConfig

    assert settings_fingerprint(PipelineConfig()) == settings_fingerprint(PipelineConfig())
    assert settings_fingerprint(PipelineConfig(claims_per_draft=3)) != settings_fingerprint(PipelineConfig())
    with_secret = PipelineConfig(state_url=EnvVar("AI_PIPELINES_POSTGRES_URL"))
    assert settings_fingerprint(with_secret) != settings_fingerprint(PipelineConfig(state_url=EnvVar("ANOTHER_URL")))
