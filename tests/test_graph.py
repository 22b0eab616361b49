"""The whole graph, materialized in-process over the sample corpus against the fake server."""

from typing import NamedTuple

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

from ai_pipelines.run_report import RunReport
from ai_pipelines.settings import Settings
from resources.documents.batches import batch_of
from tests.conftest import fake_settings, materialization_metadata, partition_metadata, run_digest_job, warehouse_query

pytestmark = pytest.mark.integration

STAGES = [
    "source_documents",
    "quarantined_documents",
    "chunks",
    "retrieval_index",
    "signals",
    "drafts",
    "fact_checks",
    "draft_revisions",
    "summaries",
    "summary_headlines",
    "digest_report",
]


class GraphRun(NamedTuple):
    settings: Settings
    instance: DagsterInstance
    result: ExecuteInProcessResult
    calls: dict[str, int]


@pytest.fixture(scope="module")
def graph(tmp_path_factory, fake_llm) -> GraphRun:
    """One run of the whole graph over the sample corpus, shared by the tests that read it."""
    fake_llm.reset()
    settings = fake_settings(tmp_path_factory.mktemp("graph") / "data", fake_llm)
    instance = DagsterInstance.ephemeral()
    result = run_digest_job(settings, instance)
    calls = {schema: fake_llm.calls_for(schema) for schema in ("ExtractedSignals", "DraftBrief", "TopicParagraph")}
    return GraphRun(settings, instance, result, {**calls, "requests": fake_llm.requests})


@pytest.fixture(scope="module")
def run(graph: GraphRun) -> ExecuteInProcessResult:
    return graph.result


def test_every_stage_materializes_and_every_check_passes(run, graph):
    report = RunReport.from_result(run, graph.settings)
    assert run.success, report.render()
    assert report.ok
    assert sorted(o.asset for o in report.outputs) == sorted(STAGES)
    assert len(report.checks) == 13 and all(c.passed for c in report.checks)
    assert graph.calls["ExtractedSignals"] == 30
    assert graph.calls["DraftBrief"] > 0 and graph.calls["TopicParagraph"] > 0


def test_materializations_explain_themselves(run):
    # Each batch's materialization describes its own documents and their calls, so sums over
    # batches are run totals, and every document is named in its batch's metadata.
    per_batch = partition_metadata(run, "signals")
    batches = {k: m for k, m in per_batch.items() if m.get("documents")}
    assert sum(m["documents"] for m in per_batch.values()) == 30 and len(batches) > 1
    assert all(m["model_requests"] == m["model_calls"] == m["documents"] for m in batches.values())
    assert all(m["prompt_tokens"] > 0 for m in batches.values())
    named = {d: batch for batch, m in batches.items() for d in m["document_status"]}
    assert len(named) == 30 and all(batch_of(d) == batch for d, batch in named.items())
    signals = next(iter(batches.values()))
    assert signals["calls_by_model"]["fake-fast"] == signals["documents"]
    assert signals["latency_p95_s"] >= signals["latency_p50_s"] >= 0
    assert "| document |" in signals["preview"] and signals["preview"].count("\n| ") == min(10, signals["documents"])
    drafts = materialization_metadata(run, "drafts")
    assert (
        drafts["claims"] > 0
        and drafts["index_version"] == materialization_metadata(run, "retrieval_index")["index_version"]
    )
    assert "calls_by_model" in drafts and "fake-strong" in drafts["calls_by_model"]
    assert drafts["calls_by_tier"] == {"strong": drafts["model_calls"]}
    assert drafts["model_written_claims"] == drafts["claims"] and drafts["extractive_claims"] == 0
    assert drafts["tokens_by_model"]["fake-strong"] > 0 and "fake-strong" in drafts["cost_by_model"]
    assert drafts["cache_hits"] == 0 and drafts["fallbacks"] == 0
    assert drafts["breaker_states"] == {"primary": "closed"}


def test_unparseable_documents_are_quarantined_with_reasons(graph):
    settings = graph.settings
    reasons = dict(warehouse_query(settings, "select kind, reason from ai_pipelines.quarantined_documents"))
    [(documents,)] = warehouse_query(settings, "select count(*) from ai_pipelines.source_documents")
    assert set(reasons) == {"binary", "empty", "encoding"}
    assert "not valid UTF-8" in reasons["encoding"] and "NUL" in reasons["binary"]
    assert documents == 30


def test_summaries_publish_only_supported_claims(graph):
    settings = graph.settings
    [(unsupported,)] = warehouse_query(
        settings,
        """
        select count(*) from ai_pipelines.summaries s, unnest(cast(s.claim_ids as varchar[])) as u(claim_id)
        join ai_pipelines.fact_checks f using (claim_id)
        left join ai_pipelines.draft_revisions r on r.claim_id = f.claim_id
        where (f.verdict <> 'supported' or f.contested) and (r.verdict is null or r.verdict <> 'supported')
        """,
    )
    [(published,)] = warehouse_query(settings, "select sum(json_array_length(claim_ids)) from ai_pipelines.summaries")
    assert unsupported == 0 and published > 0
    assert (settings.output_dir / "digest.md").read_text().startswith("# Digest")


def test_long_fan_outs_log_progress(graph):
    messages = [
        e.user_message for e in graph.instance.all_logs(graph.result.run_id) if e.user_message.startswith("signals: ")
    ]
    assert messages and messages[-1].startswith("signals: 30 of 30 (")
    assert "s left)" in messages[-1]


# Last: it materializes the shared graph a second time.
def test_rerun_with_unchanged_inputs_embeds_nothing_and_calls_no_model(graph, llm):
    assert graph.result.success and graph.calls["requests"] > 0
    second = run_digest_job(graph.settings, graph.instance)
    assert second.success
    assert llm.requests == 0
    assert materialization_metadata(second, "retrieval_index")["embedded_this_run"] == 0
    signals = partition_metadata(second, "signals")
    assert sum(m.get("cache_hits", 0) for m in signals.values()) == 30
    assert all(m["cache_hit_rate"] == 1.0 for m in signals.values() if m.get("documents"))
