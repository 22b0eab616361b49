"""The gateway's session: an asset's calls recorded under its run and asset key, the usage
metadata written per partition and in total, a failing body reported and never masked,
and the budget shared by every process of a run that records to the same trace store.

Against the deterministic fake OpenAI server; assets here are real Dagster assets run with
`materialize`, and the budget tests run their steps in separate processes, as a multiprocess
or celery run does."""

import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    EnvVar,
    JobDefinition,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
    asset_check,
    define_asset_job,
    execute_job,
    instance_for_test,
    materialize,
    multi_asset,
    multiprocess_executor,
    reconstructable,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from pydantic import BaseModel

from resources import BudgetExceededError, CallLedger, ModelResource, TraceStore
from resources.gateway.step_usage import StepUsage
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent
USAGE_KEYS = {
    "model_requests",
    "model_failed_requests",
    "model_outage_requests",
    "model_calls",
    "model_reasks",
    "model_retries",
    "cache_hits",
    "cache_hit_rate",
    "fallbacks",
    "model_failed_calls",
    "model_failures_by_endpoint",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_p50_s",
    "latency_p95_s",
    "calls_by_model",
    "calls_by_tier",
    "tokens_by_model",
    "cost_by_model",
    "breaker_states",
}
KEYS = StaticPartitionsDefinition(["a", "b", "c"])


class Echo(BaseModel):
    text: str


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def echo(llm: FakeOpenAI) -> FakeOpenAI:
    """The fake server answering `Echo` with the prompt. It counts words as tokens: a prompt of n
    words costs n prompt tokens and n + 1 completion tokens (`{"text": ...}` adds a word)."""
    llm.scripts["Echo"] = lambda messages: {"text": messages[0]["content"]}
    return llm


def gateway(server: FakeOpenAI, traces: Path, **overrides: object) -> ModelResource:
    options: dict[str, object] = dict(
        base_url=server.base_url,
        fast_model="fake-fast",
        strong_model="fake-strong",
        max_retries=0,
        trace_path=str(traces),
        input_price_per_mtok=1.0,
        output_price_per_mtok=2.0,
        strong_input_price_per_mtok=10.0,
        strong_output_price_per_mtok=20.0,
    )
    return ModelResource(**{**options, **overrides})


def metadata_by_partition(result, name: str) -> dict[str | None, dict[str, object]]:
    return {
        e.materialization.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == name
    }


def messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id) if entry.user_message]


def asks_then_fails(name: str, question: str) -> AssetsDefinition:
    """An asset whose body asks the model once, then raises."""

    @asset(name=name)
    def body(context: AssetExecutionContext, model: ModelResource) -> MaterializeResult:
        with model.session(context) as llm:
            llm.structured(ask(question), Echo)
            raise ValueError("the body failed")

    return body


def test_the_session_records_the_calls_and_writes_the_usage_metadata(echo, tmp_path):
    ledgers: list[CallLedger] = []

    @asset
    def answers(context: AssetExecutionContext, model: ModelResource) -> MaterializeResult:
        with model.session(context) as llm:
            progress = llm.progress("echoed", 3)
            llm.map_traced_structured([ask("one"), ask("two three")], Echo, on_done=progress)
            llm.structured(ask("four five six"), Echo, tier="strong")
            progress()
            ledgers.append(llm.ledger)
        return MaterializeResult(metadata={"rows": 3})

    instance = DagsterInstance.ephemeral()
    traces = tmp_path / "traces.sqlite"
    result = materialize([answers], resources={"model": gateway(echo, traces)}, instance=instance)
    assert result.success
    [ledger] = ledgers
    metadata = metadata_by_partition(result, "answers")[None]
    assert USAGE_KEYS <= set(metadata) and metadata["rows"] == 3, "the asset's own metadata stays beside the usage"
    summary = ledger.summary()
    assert metadata["model_requests"] == summary.requests == 3 and echo.requests == 3
    assert metadata["calls_by_tier"] == {"fast": 2, "strong": 1}
    assert metadata["prompt_tokens"] == summary.prompt_tokens == 6 and metadata["completion_tokens"] == 9
    assert metadata["cost_usd"] == summary.cost_usd > 0
    assert "cost_if_all_strong_usd" not in metadata  # only with compare_tiers
    # The ledger is labelled with the run and the asset, and so is every trace row.
    assert ledger.run_id == result.run_id and ledger.asset == "answers"
    store = TraceStore(traces)
    rows = store.get_many([r.trace_id for r in ledger.records])
    assert len(rows) == 3 and {(r["run_id"], r["asset"]) for r in rows} == {(result.run_id, "answers")}
    assert store.run_spend(result.run_id).tokens == 15
    assert any(m.startswith("echoed: 3 of 3") for m in messages(instance, result.run_id))


@asset(partitions_def=KEYS, backfill_policy=BackfillPolicy.single_run())
def per_key(context: AssetExecutionContext, model: ModelResource) -> MaterializeResult:
    """a: one request, b: two, c: none; and one request made for no partition."""
    with model.session(context, compare_tiers=True) as llm:
        wanted = [("a", "alpha"), ("b", "beta"), ("b", "beta gamma")]
        keys = [k for k, _ in wanted if k in context.partition_keys]
        llm.map_traced_structured([ask(text) for k, text in wanted if k in keys], Echo, partitions=keys)
        llm.structured(ask("for the whole step"), Echo)
    return MaterializeResult(metadata={"keys": len(context.partition_keys)})


def test_a_ranged_run_gets_each_partitions_own_figures(echo, tmp_path):
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [per_key],
        resources={"model": gateway(echo, tmp_path / "traces.sqlite")},
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: "a", ASSET_PARTITION_RANGE_END_TAG: "c"},
    )
    assert result.success
    by_key = metadata_by_partition(result, "per_key")
    assert set(by_key) == {"a", "b", "c"} and all(m["keys"] == 3 for m in by_key.values())
    assert by_key["a"]["model_requests"] == 1 and by_key["a"]["prompt_tokens"] == 1
    assert by_key["b"]["model_requests"] == 2 and by_key["b"]["prompt_tokens"] == 3
    assert by_key["b"]["cost_if_all_strong_usd"] > by_key["b"]["cost_usd"] > 0, "compare_tiers, per partition too"
    assert "model_requests" not in by_key["c"], "a partition without calls gets no figures"
    # The call made for no partition is in no partition's figures, and the log says so.
    assert any("carried no partition of this step" in m for m in messages(instance, result.run_id))


def test_a_single_partition_run_gets_the_steps_totals(echo, tmp_path):
    result = materialize([per_key], resources={"model": gateway(echo, tmp_path / "traces.sqlite")}, partition_key="b")
    assert result.success
    [metadata] = metadata_by_partition(result, "per_key").values()
    assert metadata["model_requests"] == 3, "its two requests and the step's own"
    assert metadata["prompt_tokens"] == 1 + 2 + 4


def test_a_multi_asset_names_the_asset_that_gets_the_figures(echo, tmp_path):
    @multi_asset(specs=[AssetSpec("left"), AssetSpec("right")])
    def both(context: AssetExecutionContext, model: ModelResource):
        with model.session(context, asset="right") as llm:
            llm.structured(ask("one"), Echo)
        yield MaterializeResult(asset_key="left")
        yield MaterializeResult(asset_key="right")

    @multi_asset(specs=[AssetSpec("up"), AssetSpec("down")])
    def unnamed(context: AssetExecutionContext, model: ModelResource):
        with model.session(context):
            pass
        yield MaterializeResult(asset_key="up")
        yield MaterializeResult(asset_key="down")

    model = gateway(echo, tmp_path / "traces.sqlite")
    result = materialize([both], resources={"model": model})
    assert metadata_by_partition(result, "right")[None]["model_requests"] == 1
    assert "model_requests" not in metadata_by_partition(result, "left")[None]
    failed = materialize([unnamed], resources={"model": model}, raise_on_error=False)
    [failure] = failed.get_step_failure_events()
    assert "model.session(context, asset=...)" in str(failure.step_failure_data.error)


def test_a_failing_body_keeps_its_exception_and_its_usage_is_logged(echo, tmp_path):
    breaks = asks_then_fails("breaks", "one two")
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [breaks],
        resources={"model": gateway(echo, tmp_path / "traces.sqlite")},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert "ValueError" in str(error) and "the body failed" in str(error)
    assert any(
        "Model usage of breaks before it failed: 1 requests, 1 calls, 5 tokens" in m
        for m in messages(instance, result.run_id)
    )


def test_metadata_that_cannot_be_written_neither_fails_the_step_nor_hides_its_error(echo, tmp_path, monkeypatch):
    def broken(self: StepUsage, *args: object) -> None:
        raise RuntimeError("metadata store unavailable")

    monkeypatch.setattr(StepUsage, "write", broken)

    @asset
    def fine(context: AssetExecutionContext, model: ModelResource) -> MaterializeResult:
        with model.session(context) as llm:
            llm.structured(ask("one"), Echo)
        return MaterializeResult(metadata={"rows": 1})

    fails = asks_then_fails("fails", "two")
    instance = DagsterInstance.ephemeral()
    model = gateway(echo, tmp_path / "traces.sqlite")
    ok = materialize([fine], resources={"model": model}, instance=instance)
    assert ok.success and metadata_by_partition(ok, "fine")[None] == {"rows": 1}
    assert any("metadata store unavailable" in m for m in messages(instance, ok.run_id))
    failed = materialize([fails], resources={"model": model}, instance=instance, raise_on_error=False)
    [failure] = failed.get_step_failure_events()
    assert "the body failed" in str(failure.step_failure_data.error)


def test_a_checks_calls_and_calls_beside_an_assets_are_recorded_apart(echo, tmp_path):
    """A check's session is labelled `<asset>:<check>` and leaves its figures to the check's result;
    a session beside an asset's (a judge's calibration) shares its run, not its figures."""
    ledgers: dict[str, CallLedger] = {}

    @asset
    def judged(context: AssetExecutionContext, model: ModelResource) -> MaterializeResult:
        with model.session(context) as llm:
            llm.structured(ask("one"), Echo)
            apart = llm.beside("judge_calibration")
            apart.structured(ask("two three"), Echo)
            ledgers["beside"] = apart.ledger
        return MaterializeResult()

    @asset_check(asset=judged)
    def judged_well(context: AssetCheckExecutionContext, model: ModelResource) -> AssetCheckResult:
        with model.session(context) as llm:
            llm.structured(ask("four five six"), Echo)
        ledgers["check"] = llm.ledger
        return AssetCheckResult(passed=True, metadata=llm.metadata())

    traces = tmp_path / "traces.sqlite"
    result = materialize([judged, judged_well], resources={"model": gateway(echo, traces)})
    assert result.success and echo.requests == 3
    assert metadata_by_partition(result, "judged")[None]["model_requests"] == 1, "the call beside is not the asset's"
    beside, checked = ledgers["beside"], ledgers["check"]
    assert (beside.run_id, beside.asset, beside.summary().requests) == (result.run_id, "judged:judge_calibration", 1)
    assert (checked.run_id, checked.asset) == (result.run_id, "judged:judged_well")
    [evaluation] = result.get_asset_check_evaluations()
    figures = {k: v.value for k, v in evaluation.metadata.items()}
    assert USAGE_KEYS <= set(figures) and figures["model_requests"] == 1 and figures["prompt_tokens"] == 3
    rows = TraceStore(traces).get_many([r.trace_id for r in [*beside.records, *checked.records]])
    assert {r["asset"] for r in rows} == {"judged:judge_calibration", "judged:judged_well"}


# The first step process of run-1: its own interpreter, its own resource instance.
FIRST_STEP = """
import sys
from pydantic import BaseModel
from resources import ModelResource

class Echo(BaseModel):
    text: str

model = ModelResource(base_url=sys.argv[1], fast_model="fake-fast", trace_path=sys.argv[2], budget_tokens=10)
words = " ".join(["word"] * 10)
model.open_session(run_id="run-1", asset="first").structured([{"role": "user", "content": words}], Echo)
"""


def test_the_budget_is_the_runs_across_processes_that_share_the_trace_store(echo, tmp_path):
    traces = tmp_path / "traces.sqlite"
    subprocess.run([sys.executable, "-c", FIRST_STEP, echo.base_url, str(traces)], cwd=ROOT, check=True, timeout=120)
    assert echo.requests == 1 and TraceStore(traces).run_spend("run-1").tokens == 21

    # Another step of the same run, in this process: its instance has spent nothing, the run has.
    second = gateway(echo, traces, budget_tokens=10)
    with pytest.raises(BudgetExceededError, match="model budget exhausted: run run-1 .* spent 21 tokens"):
        second.open_session(run_id="run-1", asset="second").structured(ask("one"), Echo)
    hashed = gateway(echo, traces, budget_tokens=10, trace_redaction="none")
    with pytest.raises(BudgetExceededError):  # redaction blanks prompts, never the figures
        hashed.open_session(run_id="run-1", asset="second").structured(ask("one"), Echo)
    assert echo.requests == 1, "refused before any request was sent"

    # Another run has its own budget; without a trace store a budget is the process's own.
    second.open_session(run_id="run-2", asset="second").structured(ask("one"), Echo)
    gateway(echo, traces, budget_tokens=10, trace_path="").open_session(run_id="run-1").structured(ask("one"), Echo)
    assert echo.requests == 3
    assert second.open_session(run_id="run-1").spent()["tokens"] == 21
    assert second.open_session(run_id="run-2").spent()["tokens"] == 3


@asset
def spends(context: AssetExecutionContext, model: ModelResource) -> MaterializeResult:
    with model.session(context) as llm:
        llm.structured(ask(" ".join(["word"] * 10)), Echo)
    return MaterializeResult()


@asset(deps=[spends])
def spends_more(context: AssetExecutionContext, model: ModelResource) -> MaterializeResult:
    with model.session(context) as llm:
        llm.structured(ask("one"), Echo)
    return MaterializeResult()


def budget_job() -> JobDefinition:
    """Two steps, each in its own process (the multiprocess executor), one budget for the run."""
    model = ModelResource(
        base_url=EnvVar("TEST_SESSION_LLM_URL"),
        trace_path=EnvVar("TEST_SESSION_TRACES"),
        fast_model="fake-fast",
        max_retries=0,
        budget_tokens=10,
    )
    definitions = Definitions(
        assets=[spends, spends_more],
        resources={"model": model},
        jobs=[define_asset_job("budget_job", executor_def=multiprocess_executor)],
    )
    return definitions.resolve_job_def("budget_job")


def test_steps_in_separate_processes_draw_on_one_run_budget(echo, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SESSION_LLM_URL", echo.base_url)
    monkeypatch.setenv("TEST_SESSION_TRACES", str(tmp_path / "traces.sqlite"))
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        with execute_job(reconstructable(budget_job), instance=instance, raise_on_error=False) as result:
            assert not result.success
            [failure] = result.get_step_failure_events()
            assert failure.step_key == "spends_more"
            assert "model budget exhausted: run " in str(failure.step_failure_data.error)
    assert echo.requests == 1, "the second step's process spent nothing itself, yet its run had spent the budget"
