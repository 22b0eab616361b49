"""Provider batches end to end: a bulk materialization of signals sent through the test server's
batch API (/v1/files, /v1/batches), the asset left waiting and saying so, the sensor ingesting
the answers and launching the materialization again, and that run answering from the cache.

Everything is real but the provider: the code location's definitions, an in-process Dagster
instance, the SQLite response cache, trace table and state store, and the fake OpenAI server on
127.0.0.1, whose batch lines are logged apart from its live calls."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, RunRequest, SensorResult, SkipReason, build_sensor_context
from pydantic import BaseModel

from ai_pipelines.backfill import all_documents_tags, register_documents
from ai_pipelines.cli import command_batches
from ai_pipelines.definitions import build_definitions, build_resources
from ai_pipelines.run_report import RunReport
from ai_pipelines.settings import Settings
from assets import STEP_MODULES
from resources.gateway.batch_registry import BatchLine, BatchRegistry, ProviderBatch
from resources.gateway.provider_batches import (
    BATCH_FALLBACK_TAG,
    BATCH_TAG,
    PENDING_BATCH_TAG,
    BatchPending,
    BatchScope,
)
from resources.gateway.request import ModelRequest
from resources.gateway.spend_limits import SpendLimits
from resources.gateway.traces import TraceStore
from sensors import provider_batch_sensor
from tests.conftest import gateway, partition_metadata, warehouse_query
from tests.fake_openai import data_block
from tests.test_llm_steps import GIST_PROMPT, GIST_STEP, gist, run_gists, step_package

pytestmark = pytest.mark.integration

INPUT_PRICE, OUTPUT_PRICE, BATCH_RATIO = 2.0, 8.0, 0.5  # USD per million tokens; the batch's share
SIGNALS = "ExtractedSignals"


def write_corpus(folder: Path, documents: int) -> None:
    """Short news items, each titled with its number, so a test can fault chosen documents' lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        body = (
            f"Northwind Robotics opened a depot in Leeds with {20 + i} staff. "
            f"The site handles {100 + 7 * i} orders a day, said Ada Lovelace, chief executive."
        )
        (folder / f"item-{i:03d}.md").write_text(f"# Depot report {i:03d}\n\nDate: 2026-10-01\n\n{body}\n")


def document_number(body: dict) -> int:
    return int((data_block(body["messages"], "title") or "-1").rsplit(" ", 1)[-1])


class BatchedCorpus:
    """A corpus, the code location over it with batches on, one instance, and the steps a daemon takes."""

    def __init__(self, tmp_path: Path, settings: Settings, documents: int, **changes: object) -> None:
        write_corpus(tmp_path / "corpus", documents)
        self.settings = settings.model_copy(
            update={
                "corpus_dir": tmp_path / "corpus",
                "llm_batch": True,
                "llm_batch_price_ratio": BATCH_RATIO,
                "llm_input_price_per_mtok": INPUT_PRICE,
                "llm_output_price_per_mtok": OUTPUT_PRICE,
                **changes,
            }
        )
        self.defs = build_definitions(self.settings)
        self.resources = build_resources(self.settings)
        self.instance = DagsterInstance.ephemeral()
        register_documents(self.instance, self.resources["pipeline"])
        self.registry = BatchRegistry(self.settings.gateway_state_location)

    def run_documents(self):
        """document_job over every batch of documents, as `ai-pipelines run` launches it."""
        job = self.defs.resolve_job_def("document_job")
        result = job.execute_in_process(
            instance=self.instance, tags=all_documents_tags(self.instance), raise_on_error=False
        )
        assert result.success
        return result

    def tick(self) -> SensorResult | SkipReason:
        context = build_sensor_context(instance=self.instance, resources={"model": self.resources["model"]})
        return provider_batch_sensor(context)

    def launch(self, request: RunRequest):
        """What the daemon does with the sensor's request: the selected assets over the same partitions."""
        selection = list(request.asset_selection or [])
        job = self.defs.resolve_implicit_job_def_def_for_assets(selection)
        assert job is not None
        result = job.execute_in_process(
            instance=self.instance, tags=dict(request.tags), asset_selection=selection, raise_on_error=False
        )
        assert result.success
        return result

    def signal_statuses(self) -> dict[str, int]:
        return dict(warehouse_query(self.settings, "select status, count(*) from ai_pipelines.signals group by status"))

    def observations(self, asset: str = "signals") -> list[dict]:
        records = self.instance.fetch_observations(AssetKey(asset), limit=1000).records
        return [
            {"partition": r.partition_key, **{k: v.value for k, v in r.asset_observation.metadata.items()}}
            for r in records
            if r.asset_observation is not None
        ]


def summed(result, key: str) -> float:
    return sum(values.get(key, 0) for values in partition_metadata(result, "signals").values())


def test_a_bulk_run_goes_through_the_batch_api_and_its_rerun_costs_nothing(tmp_path, settings, llm):
    invalid, failing = {3, 50, 97, 150, 199}, {10, 120}
    llm.batch_api.line_fault = lambda custom_id, body: (
        "invalid" if document_number(body) in invalid else "error" if document_number(body) in failing else None
    )
    corpus = BatchedCorpus(tmp_path, settings, 200, llm_batch_min_requests=50)

    # The first run submits every extraction in one batch and asks nothing live; signals waits, visibly.
    llm.batch_api.hold = True
    first = corpus.run_documents()
    assert llm.calls_for(SIGNALS) == 0 and len(llm.batch_api.batches) == 1
    [batch] = corpus.registry.batches()
    assert (batch.requests, batch.asset, batch.selection, batch.status) == (200, "signals", ["signals"], "in_progress")
    assert batch.expected_cost_usd > 0
    assert corpus.instance.get_run_by_id(first.run_id).tags[PENDING_BATCH_TAG] == batch.batch_id
    assert AssetKey("signals") not in {e.asset_key for e in first.get_asset_materialization_events()}
    waiting = corpus.observations()
    assert waiting and {(o["batch_id"], o["status"], o["requests"]) for o in waiting} == {
        (batch.batch_id, "waiting for provider batch", 200)
    }
    assert {o["partition"] for o in waiting} == set(all_partitions(corpus))
    print("\nBATCH pending:", {k: waiting[0][k] for k in ("batch_id", "requests", "expected_cost_usd")})
    # The run's report says the run waits (not that it failed), for which batch, and what launches the rest.
    report = RunReport.from_result(first, corpus.settings)
    assert report.ok and report.waiting and "signals" in report.not_materialized
    rendered = report.render()
    assert rendered.startswith(f"Run {first.run_id}: waiting for a provider batch")
    assert f"WAITING: signals waits for provider batch {batch.batch_id} (200 requests" in rendered

    # Run again while the batch is out: it waits for the same batch, submits no other, asks nothing.
    corpus.run_documents()
    assert llm.calls_for(SIGNALS) == 0 and len(llm.batch_api.batches) == 1

    # The sensor waits while the provider works, then ingests and launches the follow-up.
    assert isinstance(corpus.tick(), SkipReason)
    llm.batch_api.hold = False
    ticked = corpus.tick()
    assert isinstance(ticked, SensorResult) and len(ticked.run_requests or []) == 1
    [request] = ticked.run_requests or []
    assert request.run_key == batch.batch_id and request.tags[BATCH_TAG] == batch.batch_id
    assert {k: v for k, v in request.tags.items() if k != BATCH_TAG} == all_documents_tags(corpus.instance)
    assert request.asset_selection == [AssetKey("signals")]
    assert len(llm.batch_api.lines) == 198 and llm.calls_for(SIGNALS) == 0  # the 2 failed lines never ran
    ingested = corpus.registry.get(batch.batch_id)
    assert ingested is not None
    assert (ingested.answered, ingested.invalid, ingested.failed, ingested.handled) == (193, 5, 2, "relaunched")
    assert isinstance(corpus.tick(), SkipReason)  # a batch launches one run

    # Cost at the batch price: every answered line (invalid ones too) is a trace row at half the live price.
    traces = TraceStore(corpus.settings.trace_location)
    rows = [r for r in traces_of(traces, f"batch:{batch.batch_id}")]
    assert len(rows) == 198
    for row in rows:
        live = (row["prompt_tokens"] * INPUT_PRICE + row["completion_tokens"] * OUTPUT_PRICE) / 1_000_000
        assert row["cost_usd"] == pytest.approx(live * BATCH_RATIO)
    assert ingested.cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows), abs=1e-6) and ingested.cost_usd > 0

    # The follow-up run answers from the cache and asks live only the invalid and failed lines.
    follow_up = corpus.launch(request)
    assert llm.calls_for(SIGNALS) == 7
    assert {document_number(c) for c in llm.calls if c["schema"] == SIGNALS} == invalid | failing
    assert corpus.signal_statuses() == {"valid": 200}
    assert summed(follow_up, "batch_answers") == 193 and summed(follow_up, "batch_live_requests") == 7
    assert summed(follow_up, "batch_cost_usd") == pytest.approx(ingested.cost_usd, abs=1e-5)
    assert summed(follow_up, "cache_hits") == 193
    print(
        "BATCH follow-up:",
        {"batch_answers": 193, "live_reasks": llm.calls_for(SIGNALS), "batch_cost_usd": ingested.cost_usd},
    )

    # Unchanged, the same selection again: no call, no batch.
    corpus.run_documents()
    assert llm.calls_for(SIGNALS) == 7 and len(llm.batch_api.batches) == 1 and len(llm.batch_api.lines) == 198
    assert corpus.signal_statuses() == {"valid": 200}


def all_partitions(corpus: BatchedCorpus) -> list[str]:
    tags = all_documents_tags(corpus.instance)
    keys = corpus.defs.resolve_job_def("document_job").partitions_def.get_partition_keys()
    start, end = (
        keys.index(tags["dagster/asset_partition_range_start"]),
        keys.index(tags["dagster/asset_partition_range_end"]),
    )
    return keys[start : end + 1]


def traces_of(traces: TraceStore, run_id: str) -> list[dict]:
    ids = [row[0] for row in traces._db.fetchall("select trace_id from traces where run_id = ?", (run_id,))]
    return traces.get_many(ids)


@pytest.mark.parametrize("on_failure", ["report", "live"])
def test_an_expired_batch_is_reported_or_asked_live_as_configured(tmp_path, settings, llm, on_failure, capsys):
    corpus = BatchedCorpus(tmp_path, settings, 40, llm_batch_min_requests=10, llm_batch_on_failure=on_failure)
    llm.batch_api.outcome = "expired"  # the first half of the lines answered, the rest batch_expired
    corpus.run_documents()
    assert llm.calls_for(SIGNALS) == 0
    [batch] = corpus.registry.batches()
    ticked = corpus.tick()
    assert isinstance(ticked, SensorResult)
    ended = corpus.registry.get(batch.batch_id)
    assert ended is not None and ended.status == "expired" and "expired" in ended.reason
    assert (ended.answered, ended.failed) == (20, 20)
    if on_failure == "report":
        assert not ticked.run_requests and ended.handled == "reported"
        reports = [
            {"partition": e.partition, **{k: v.value for k, v in e.metadata.items()}} for e in ticked.asset_events
        ]
        assert {o["partition"] for o in reports} == set(batch.partitions) and all_partitions(corpus) == batch.partitions
        assert {(o["batch_id"], o["status"], o["unanswered"]) for o in reports} == {
            (batch.batch_id, "provider batch expired", 20)
        }
        assert "completion window" in reports[0]["reason"]
        assert llm.calls_for(SIGNALS) == 0
        # `ai-pipelines batches` lists it for a person, with the reason.
        assert command_batches(argparse.Namespace(limit=10, json=False), corpus.settings) == 0
        listed = capsys.readouterr().out
        assert batch.batch_id in listed and "expired" in listed and "reported" in listed
        return
    [request] = ticked.run_requests or []
    assert request.tags[BATCH_FALLBACK_TAG] == "live" and ended.handled == "relaunched_live"
    follow_up = corpus.launch(request)
    assert llm.calls_for(SIGNALS) == 20 and len(llm.batch_api.batches) == 1  # asked live, not submitted again
    assert corpus.signal_statuses() == {"valid": 40}
    assert summed(follow_up, "batch_answers") == 20 and summed(follow_up, "batch_live_requests") == 20


def test_a_batch_is_held_to_the_spend_caps_before_it_is_sent_and_counted_once_answered(tmp_path, settings, llm):
    # A cap smaller than the batch's expected cost: the batch is refused before anything is uploaded,
    # and the run fails naming the cap, as a live call would.
    tight = BatchedCorpus(
        tmp_path / "tight", settings, 12, llm_batch_min_requests=5, llm_spend_caps=[{"name": "daily", "usd": 0.0001}]
    )
    job = tight.defs.resolve_job_def("document_job")
    refused = job.execute_in_process(
        instance=tight.instance, tags=all_documents_tags(tight.instance), raise_on_error=False
    )
    assert not refused.success and not llm.batch_api.batches and llm.calls_for(SIGNALS) == 0
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    assert "spend cap 'daily' (day " in str(failure.step_failure_data.error) and "batch refused" in str(
        failure.step_failure_data.error
    )

    # A cap with room: the batch goes, and once its answers are in, every cap counts what it cost.
    roomy = BatchedCorpus(
        tmp_path / "roomy", settings, 12, llm_batch_min_requests=5, llm_spend_caps=[{"name": "daily", "usd": 5}]
    )
    roomy.run_documents()
    [batch] = roomy.registry.batches()
    [request] = roomy.tick().run_requests or []
    spent = {c.name: c for c in SpendLimits(build_resources(roomy.settings)["model"]).standing()}
    answered = roomy.registry.get(batch.batch_id)
    assert answered is not None and answered.cost_usd > 0
    assert spent["daily"].spent_usd == pytest.approx(answered.cost_usd, abs=1e-6)
    roomy.launch(request)
    assert llm.calls_for(SIGNALS) == 0 and roomy.signal_statuses() == {"valid": 12}


def test_a_failed_batch_is_reported_with_the_providers_reason(tmp_path, settings, llm):
    corpus = BatchedCorpus(tmp_path, settings, 12, llm_batch_min_requests=5)
    llm.batch_api.outcome = "failed"
    corpus.run_documents()
    ticked = corpus.tick()
    assert isinstance(ticked, SensorResult) and not ticked.run_requests
    [batch] = corpus.registry.batches()
    assert (batch.status, batch.handled, batch.answered, batch.unanswered) == ("failed", "reported", 0, 12)
    assert batch.reason.startswith("failed: invalid_request: ")
    assert {e.metadata["reason"].value for e in ticked.asset_events} == {batch.reason}
    assert llm.calls_for(SIGNALS) == 0 and not llm.batch_api.lines


# The gist step of the YAML step tests, allowed to batch (its checks left out: they need no batch).
GIST_BATCH_STEP = GIST_STEP.split("  checks:")[0].replace(
    "  prompt: prompt.txt\n", "  prompt: prompt.txt\n  batch: true\n"
)


def test_a_yaml_step_with_batch_true_goes_through_the_batch_api(tmp_path, settings, llm):
    package = step_package(
        tmp_path / "project", {"document_gists": {"defs.yaml": GIST_BATCH_STEP, "prompt.txt": GIST_PROMPT}}
    )
    llm.scripts["DocumentGistsAnswer"] = gist
    settings = settings.model_copy(update={"llm_batch": True, "llm_batch_min_requests": 5})
    instance = DagsterInstance.ephemeral()
    assert run_gists(settings, package, instance).success
    assert llm.calls_for("DocumentGistsAnswer") == 0 and len(llm.batch_api.batches) == 1
    model = build_resources(settings)["model"]
    ticked = provider_batch_sensor(build_sensor_context(instance=instance, resources={"model": model}))
    assert isinstance(ticked, SensorResult)
    [request] = ticked.run_requests or []
    assert request.asset_selection == [AssetKey("document_gists")]
    defs = build_definitions(settings, step_modules=(*STEP_MODULES, package))
    job = defs.resolve_implicit_job_def_def_for_assets(request.asset_selection)
    assert job is not None
    result = job.execute_in_process(instance=instance, tags=request.tags, asset_selection=request.asset_selection)
    assert result.success
    answered = len(llm.batch_api.lines)
    assert answered >= 5 and llm.calls_for("DocumentGistsAnswer") == 0
    statuses = dict(
        warehouse_query(settings, "select status, count(*) from ai_pipelines.document_gists group by status")
    )
    assert statuses == {"valid": answered}


@pytest.mark.services
def test_the_registry_is_shared_through_postgres(postgres_url):
    """The run, the sensor and the follow-up run may be three processes on three hosts: the registry
    works the same in Postgres, where production keeps it."""
    submitting, polling = BatchRegistry(postgres_url), BatchRegistry(postgres_url)
    lines = [
        BatchLine(
            batch_id="batch_pg",
            custom_id=f"key-{i}",
            tier="fast",
            partition=f"p{i % 2}",
            body={"n": i},
            output_schema={"type": "object"},
        )
        for i in range(250)  # more than one multi-row statement
    ]
    batch = ProviderBatch(
        batch_id="batch_pg",
        endpoint="primary",
        model="m",
        tier="fast",
        asset="signals",
        origin_run_id="run-1",
        partitions=["p0", "p1"],
        run_tags={"t": "v"},
        selection=["signals"],
        requests=250,
        expected_cost_usd=0.5,
    )
    submitting.add(batch, lines)
    assert set(polling.holding(["key-3", "key-249", "unknown"])) == {"key-3", "key-249"}
    assert [b.batch_id for b in polling.batches(unhandled_only=True)] == ["batch_pg"]
    for line in lines:
        line.outcome, line.cost_usd = ("answered", 0.002) if int(line.custom_id[4:]) % 5 else ("invalid", 0.001)
    polling.save_lines(lines)
    batch.handled = "relaunched"
    polling.save(batch)
    assert submitting.batches(unhandled_only=True) == []
    assert submitting.get("batch_pg").run_tags == {"t": "v"}
    figures = submitting.figures("batch_pg")
    assert figures.answered == 200 and figures.cost_usd == pytest.approx(200 * 0.002 + 50 * 0.001)
    assert submitting.figures("batch_pg", "p0").answered == 100


class Answer(BaseModel):
    text: str


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_two_runs_reaching_the_same_requests_at_once_send_them_in_one_batch(store, tmp_path, llm, request):
    """Each run claims the requests before it uploads them, in a transaction every process runs
    alone: while the first upload is still on its way, the second run finds them claimed and waits
    for the first run's batch instead of paying for them twice."""
    state = request.getfixturevalue("postgres_url") if store == "postgres" else str(tmp_path / "state.sqlite")
    llm.batch_api.upload_seconds = 0.5  # both runs are past their cache lookups before either has a batch id
    requests = [
        ModelRequest(messages=[{"role": "user", "content": f"Say {i}."}], output=Answer, partition="batch-00")
        for i in range(12)
    ]
    outcomes: dict[str, BaseException] = {}
    start = threading.Barrier(2)

    def run(name: str) -> None:
        # A gateway of its own per run, as two processes have: its own connections to the store.
        model = gateway(
            llm, batch=True, batch_min_requests=5, state_path=state, cache_path=str(tmp_path / "cache.sqlite")
        )
        start.wait()
        try:
            model.provider_batches().offer(requests, BatchScope(run_id=name, asset="signals"))
        except BaseException as exc:  # noqa: BLE001 - the outcome is what the test reads
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("run-1", "run-2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(llm.batch_api.batches) == 1 and len(llm.batch_api.files) == 1, f"one upload, one batch: {outcomes}"
    [batch_id] = llm.batch_api.batches
    assert {type(e) for e in outcomes.values()} == {BatchPending} and len(outcomes) == 2, outcomes
    submitter, waiter = sorted(outcomes.values(), key=lambda e: -len(e.submitted))  # type: ignore[attr-defined]
    assert (submitter.submitted, [b.batch_id for b in submitter.batches]) == ([batch_id], [batch_id])  # type: ignore[attr-defined]
    # The other run waits for the same requests: for the provider's batch, or the claim that became it.
    [held] = waiter.batches  # type: ignore[attr-defined]
    assert not waiter.submitted and (held.batch_id == batch_id or held.status == "submitting")  # type: ignore[attr-defined]
    registry = BatchRegistry(state)
    assert [b.batch_id for b in registry.batches()] == [batch_id]  # the claim took the provider's id
    assert len(registry.lines(batch_id)) == len(requests)
