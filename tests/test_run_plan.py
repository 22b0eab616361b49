"""The run command materializes only what changed: new and edited documents, what
depends on them, and everything after a settings change; nothing when nothing changed."""

import shutil

from dagster import DagsterInstance

from ai_pipelines.backfill import run_what_changed
from ai_pipelines.definitions import build_definitions, build_resources
from ai_pipelines.instance import instance_yaml
from tests.conftest import DATA


def test_runs_materialize_what_changed_and_nothing_else(tmp_path, settings, llm, monkeypatch):
    corpus = tmp_path / "corpus"
    shutil.copytree(DATA / "external_corpus", corpus)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings = settings.model_copy(update={"corpus_dir": corpus, "embeddings_base_url": llm.base_url, "embeddings_model": "hashed"})
    instance = DagsterInstance.get()

    def run(settings=settings, everything=False):
        llm.calls.clear()
        plan, result = run_what_changed(
            build_definitions(settings), instance, build_resources(settings)["pipeline"], everything, raise_on_error=False
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
    assert plan.documents == [] and plan.refresh_downstream and "1 removed" in plan.reason
    assert "ExtractedSignals" not in calls
    assert result.job_def.name == "digest_refresh_job"

    # A setting that shapes outputs but is not code: everything again (the cache answers).
    plan, result, calls = run(settings.model_copy(update={"claims_per_draft": 3}))
    assert len(plan.documents) == 4 and plan.refresh_downstream

    plan, result, calls = run(everything=True)
    assert len(plan.documents) == 4 and "as asked" in plan.reason
