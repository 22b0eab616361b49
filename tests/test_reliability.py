"""The reliability suite, part one: provider faults, outages, repeated writes and concurrent runs.

Each scenario runs the real graph against fault-injecting OpenAI-compatible servers on
127.0.0.1 and checks what a person relies on: no document lost or duplicated, an outage
named rather than hidden, nothing published that was not verified, and consistent
tables and index when two runs write at once. The figures each prints are those of
RELIABILITY.md. The rest of the suite (marker `reliability`): hostile input in
test_document_intake, crash and resume in test_resume, secrets in test_secrets,
publishing and index writes done twice in test_publishing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ai_pipelines.definitions import build_definitions
from ai_pipelines.run_report import RunReport
from ai_pipelines.settings import Settings
from resources.retrieval.index_sync import collection_name
from tests.conftest import (
    CLI,
    materialization_metadata,
    partition_metadata,
    process_environment,
    run_digest_job,
    warehouse_query,
)
from tests.fake_openai import FakeOpenAI, Fault, random_faults

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

COMPANIES = ["Northwind Robotics", "Helios Grid", "Bluefin Foods", "Quanta Ledger", "Orchid Rail"]
CITIES = ["Leeds", "Porto", "Tartu", "Lyon", "Gdansk", "Bergen"]


def write_corpus(folder: Path, documents: int) -> None:
    """Short news items, each naming a company, a city and figures that signals can ground."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        company, city = COMPANIES[i % len(COMPANIES)], CITIES[i % len(CITIES)]
        body = (
            f"{company} opened a depot in {city} with {20 + i} staff. "
            f"The site cost {3 + i % 9} million euros and handles {100 + 7 * i} orders a day. "
            f"Analysts at Fenwick Research called the move a sensible expansion for {company}."
        )
        (folder / f"item-{i:03d}.md").write_text(
            f"# {company} in {city} ({i})\n\nDate: 2026-10-{1 + i % 28:02d}\n\n{body}\n"
        )


def index_ids(settings: Settings) -> set[str]:
    vector_store = build_definitions(settings).resources["vector_store"]
    return vector_store.ids(collection_name("chunks", vector_store.embeddings.model_id))


def summed_metadata(result, asset: str, key: str) -> int:
    """A metadata value added up over the asset's materializations (one per partition)."""
    return sum(int(values[key]) for values in partition_metadata(result, asset).values() if key in values)


def assert_consistent(settings: Settings, documents: int) -> None:
    """Every document once in every per-document table, and the index holds exactly the chunks."""
    registered = warehouse_query(
        settings, "select count(distinct document), count(*) from ai_pipelines.source_documents"
    )[0]
    quarantined = warehouse_query(settings, "select count(*) from ai_pipelines.quarantined_documents")[0][0]
    assert registered[0] == registered[1] and registered[0] + quarantined == documents, (registered, quarantined)
    assert warehouse_query(settings, "select count(*) - count(distinct chunk_id) from ai_pipelines.chunks")[0][0] == 0
    assert warehouse_query(settings, "select count(*) - count(distinct document) from ai_pipelines.signals")[0][0] == 0
    assert warehouse_query(settings, "select count(*) from ai_pipelines.signals")[0][0] == registered[0]
    chunk_ids = {row[0] for row in warehouse_query(settings, "select chunk_id from ai_pipelines.chunks")}
    assert index_ids(settings) == chunk_ids


@pytest.fixture
def backup():
    with FakeOpenAI() as server:
        yield server


def with_fallback(settings: Settings, backup: FakeOpenAI, **changes) -> Settings:
    fallback = {"name": "backup", "base_url": backup.base_url, "fast_model": "fake-fast", "strong_model": "fake-strong"}
    return settings.model_copy(update={"llm_fallbacks": [fallback], **changes})


def test_200_documents_through_a_primary_failing_30_percent_of_calls_lose_nothing(tmp_path, settings, llm, backup):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 200)
    llm.fault_source = random_faults(0.3, seed=7, timeout_delay=1.0)
    settings = with_fallback(settings, backup, corpus_dir=corpus, llm_timeout_seconds=0.5, llm_max_concurrency=8)
    result = run_digest_job(settings)
    report = RunReport.from_result(result, settings)
    assert result.success and report.ok, report.render()
    assert_consistent(settings, 200)
    statuses = dict(warehouse_query(settings, "select status, count(*) from ai_pipelines.signals group by status"))
    assert statuses == {"valid": 200}, statuses
    usage = report.model_usage
    figures = {
        "documents": 200,
        "signals_valid": statuses["valid"],
        "requests": usage.requests,
        "failed_requests": usage.failed_requests,
        "retries": usage.retries,
        "reasks": usage.reasks,
        "fallbacks": usage.fallbacks,
        "primary_requests": llm.requests,
        "backup_requests": backup.requests,
        "primary_failures": report.model_usage.describe_failures(),
    }
    print("\nRELIABILITY flaky primary:", figures)
    assert usage.failed_requests == 0 and usage.retries > 0 and usage.reasks > 0 and usage.fallbacks > 0
    # Per-partition metadata adds up to the run: one request per document, not the run's total on each.
    assert summed_metadata(result, "signals", "model_requests") == 200
    assert summed_metadata(result, "signals", "documents") == 200


def test_every_endpoint_down_fails_fast_and_publishes_nothing_then_recovers_then_degrades_loudly(settings, llm, backup):
    settings = with_fallback(settings, backup)
    llm.persistent_fault = backup.persistent_fault = Fault(status=503)
    result = run_digest_job(settings)
    report = RunReport.from_result(result, settings)
    rendered = report.render()
    print("\nRELIABILITY every endpoint down:", rendered.splitlines()[:4], "requests", llm.requests, backup.requests)
    assert not report.ok and report.model_usage.outage
    assert (
        "MODEL OUTAGE" in rendered and "primary 503" in rendered and "backup" in rendered and "circuit open" in rendered
    )
    assert {"drafts", "fact_checks", "summaries"} <= set(report.not_materialized)
    assert not (settings.output_dir / "digest.md").exists()
    # Fails fast: once the breakers open, the other documents are not sent at all.
    breaker, attempts = settings.llm_breaker_failures, settings.llm_max_retries + 1
    assert llm.requests <= (breaker + 8) * attempts and backup.requests <= (breaker + 8) * attempts
    assert llm.requests < 30 * attempts

    # The endpoints recover: the next run over the same data directory succeeds (a failed run
    # once left a NULL-typed column behind that broke every later run).
    llm.persistent_fault = backup.persistent_fault = None
    recovered = run_digest_job(settings)
    assert recovered.success and RunReport.from_result(recovered, settings).ok
    assert (settings.output_dir / "digest.md").exists()

    # Down again, with new topics to draft: drafts fall back to evidence sentences, and the
    # run says so instead of exiting 0 in silence; every attempt is counted.
    llm.reset()
    backup.reset()
    llm.persistent_fault = backup.persistent_fault = Fault(status=503)
    degraded = settings.model_copy(update={"topics": ["Seville", "Tartu"]})  # new topics: new requests
    result = run_digest_job(degraded)
    report = RunReport.from_result(result, degraded)
    rendered = report.render()
    assert llm.calls_for("ExtractedSignals") == 0  # unchanged documents: signals from the cache
    assert result.success and not report.ok and "DEGRADED: model outage" in rendered and "primary 503" in rendered, (
        rendered
    )
    [warning] = [c for c in report.warnings if c.check == "draft_requests_succeeded"]
    assert "failed" in warning.description
    metadata = materialization_metadata(result, "drafts")
    print(
        "\nRELIABILITY degraded drafts:",
        {k: metadata[k] for k in ("model_requests", "model_failed_requests", "model_calls", "model_retries")},
        "server requests",
        llm.requests + backup.requests,
        report.render().splitlines()[0],
    )
    assert metadata["model_retries"] > 0
    # Every attempt the servers saw is a call or a retry in the metadata of the asset that made it
    # (drafts, and the verification, refinement and summaries after them); the metadata also counts
    # the calls an open circuit refused, which never reached a server.
    used = [
        {k: v.value for k, v in e.materialization.metadata.items()} for e in result.get_asset_materialization_events()
    ]
    attempts_recorded = sum(m.get("model_calls", 0) + m.get("model_retries", 0) for m in used)
    served = llm.requests + backup.requests
    assert metadata["model_calls"] + metadata["model_retries"] <= served <= attempts_recorded, (
        metadata,
        served,
        attempts_recorded,
    )


def test_two_runs_over_overlapping_documents_at_once_leave_index_and_tables_consistent(tmp_path, settings, llm):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 40)
    llm.persistent_fault = Fault(status=0, delay_seconds=0.05)  # slow enough that the runs overlap
    environment = process_environment(settings, AI_PIPELINES_CORPUS_DIR=str(corpus))
    runs = [
        subprocess.Popen(
            [str(CLI), "run"],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=600)[0] for r in runs]
    print("\nRELIABILITY concurrent runs: exit codes", [r.returncode for r in runs], "requests", llm.requests)
    assert all(r.returncode == 0 for r in runs), "\n\n".join(outputs)
    settings = settings.model_copy(update={"corpus_dir": corpus})
    assert_consistent(settings, 40)
    assert (settings.output_dir / "digest.md").read_text().startswith("# Digest")
    assert not list(settings.output_dir.glob(".*.partial"))
