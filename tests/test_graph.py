"""The whole graph, materialized in-process over the sample corpus against the fake server."""

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance

from ai_pipelines.report import RunReport
from tests.conftest import run_digest_job

STAGES = ["source_documents", "quarantined_documents", "chunks", "retrieval_index", "signals", "drafts", "fact_checks", "summaries", "digest_report"]


@pytest.fixture
def run(settings):
    return run_digest_job(settings)


def metadata(result, asset):
    # A partitioned asset has one event per document, each with the output's metadata.
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(asset))
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_every_stage_materializes_and_every_check_passes(run, settings, llm):
    report = RunReport.from_result(run, settings)
    assert run.success, report.render()
    assert report.ok
    assert sorted(o.asset for o in report.outputs) == sorted(STAGES)
    assert len(report.checks) == 7 and all(c.passed for c in report.checks)
    assert llm.calls_for("ExtractedSignals") == 30
    assert llm.calls_for("ClaimRewrite") > 0


def test_materializations_explain_themselves(run):
    signals = metadata(run, "signals")
    assert signals["documents"] == 30 and signals["model_calls"] == 30
    assert signals["prompt_tokens"] > 0 and "fake-fast" in signals["calls_by_model"]
    assert signals["latency_p95_s"] >= signals["latency_p50_s"] >= 0
    assert "| document |" in signals["preview"]
    drafts = metadata(run, "drafts")
    assert drafts["claims"] > 0 and drafts["index_version"] == metadata(run, "retrieval_index")["index_version"]
    assert "calls_by_model" in drafts and "fake-strong" in drafts["calls_by_model"]
    assert drafts["calls_by_tier"] == {"strong": drafts["model_calls"]}
    assert drafts["tokens_by_model"]["fake-strong"] > 0 and "fake-strong" in drafts["cost_by_model"]
    assert drafts["cache_hits"] == 0 and drafts["fallbacks"] == 0
    assert drafts["breaker_states"] == {"primary": "closed"}


def test_unparseable_documents_are_quarantined_with_reasons(run, settings):
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as db:
        reasons = dict(db.execute("select kind, reason from ai_pipelines.quarantined_documents").fetchall())
        documents = db.execute("select count(*) from ai_pipelines.source_documents").fetchone()[0]
    assert set(reasons) == {"binary", "empty", "encoding"}
    assert "not valid UTF-8" in reasons["encoding"] and "NUL" in reasons["binary"]
    assert documents == 30


def test_summaries_publish_only_supported_claims(run, settings):
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as db:
        unsupported = db.execute(
            """
            select count(*) from ai_pipelines.summaries s, unnest(cast(s.claim_ids as varchar[])) as u(claim_id)
            join ai_pipelines.fact_checks f using (claim_id)
            where f.verdict <> 'supported' or f.contested
            """
        ).fetchone()[0]
        published = db.execute("select sum(json_array_length(claim_ids)) from ai_pipelines.summaries").fetchone()[0]
    assert unsupported == 0 and published > 0
    assert (settings.output_dir / "digest.md").read_text().startswith("# Digest")


def test_rerun_with_unchanged_inputs_embeds_nothing_and_calls_no_model(settings, llm):
    first = run_digest_job(settings)
    assert first.success and llm.requests > 0
    llm.reset()
    second = run_digest_job(settings)
    assert second.success
    assert llm.requests == 0
    assert metadata(second, "retrieval_index")["embedded_this_run"] == 0
    signals = metadata(second, "signals")
    assert signals["cache_hits"] == signals["model_calls"] == 30 and signals["cache_hit_rate"] == 1.0


def test_long_fan_outs_log_progress(settings):
    instance = DagsterInstance.ephemeral()
    result = run_digest_job(settings, instance)
    messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message.startswith("signals: ")]
    assert messages and messages[-1].startswith("signals: 30 of 30 (")
    assert "s left)" in messages[-1]
