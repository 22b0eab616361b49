"""Typed fallbacks over real HTTP: a prompt over an endpoint's context window goes on to a larger
window (or is cut, when its step says so), and a content-policy refusal goes to the endpoint
configured for it. The test servers refuse as OpenAI, Azure OpenAI, vLLM and llama.cpp do, each
in its own shape; the reasons land in the trace table, the ledger and the run report."""

from typing import Any

import dagster as dg
import pytest
from pydantic import BaseModel

from ai_pipelines.run_report import RunReport
from assets.components.llm_step import LlmStep, StepDefinitionError, StepRun, ask_items
from resources import Endpoint, ModelCallError, ModelResource, TraceStore
from resources.gateway.context_cut import cut_to_fit
from resources.gateway.ledger import CallRecord
from tests.conftest import gateway
from tests.fake_openai import FakeOpenAI, fixed_answer
from tests.test_llm_steps import GIST_STEP, gist_folder


class ClaimRewrite(BaseModel):
    claim: str


def evidence(words: int, topic: str = "harbour") -> list[dict[str, Any]]:
    """A request as the product phrases it, `words` words of evidence in a delimited block."""
    text = " ".join(f"{topic}{i}" for i in range(words))
    return [{"role": "user", "content": f"Rewrite the evidence as a claim.\n<evidence>\n{text}\n</evidence>"}]


def rows_of(session) -> list[dict[str, object]]:
    """The trace table's rows of every call the session recorded."""
    return session.trace_records([r.trace_id for r in session.ledger.records])


def by_endpoint(rows: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    grouped: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        grouped.setdefault(str(row["endpoint"]), []).append(row)
    return grouped


@pytest.mark.integration
@pytest.mark.parametrize("style", ["openai", "vllm", "llamacpp"])
def test_a_prompt_over_the_context_window_goes_to_the_next_larger_window_past_a_smaller_one(
    style, llm, second_llm, tmp_path
):
    """The primary declares no window: the one its refusal names (100) is what a later endpoint
    must beat, so the 80-token endpoint in between is skipped, never asked."""
    llm.context_window_tokens, llm.context_error_style = 100, style
    second_llm.context_window_tokens = 80
    with FakeOpenAI() as large:
        model = gateway(
            llm,
            fallbacks=[
                Endpoint(name="small", base_url=second_llm.base_url, fast_model="small", context_window_tokens=80),
                Endpoint(name="large", base_url=large.base_url, fast_model="large", context_window_tokens=4000),
            ],
            trace_path=str(tmp_path / "traces.sqlite"),
            breaker_failures=1,
        )
        session = model.open_session(run_id="run-1")
        answer, trace_id = session.traced_structured(evidence(150), ClaimRewrite, max_tokens=20)
        assert answer.claim.startswith("harbour0 harbour1") and large.requests == 1
    assert llm.requests == 1 and llm.refused == 1, "a refusal is not retried"
    assert second_llm.requests == 0, "a window not larger than the refused one is not asked"
    rows = by_endpoint(rows_of(session))
    [refused], [skipped], [answered] = rows["primary"], rows["small"], rows["large"]
    worded = "exceeds the available context size" if style == "llamacpp" else "maximum context length is 100"
    assert refused["error_kind"] == "context window" and worded in str(refused["error"])
    assert skipped["error_kind"] == "context window" and skipped["attempt"] == 0
    assert "not larger than primary's 100" in str(skipped["error"]), skipped["error"]
    assert answered["trace_id"] == trace_id and answered["fallback_reason"] == "context window"
    assert answered["error"] == "" and answered["fallback"] == 1
    summary = session.ledger.summary()
    assert summary.fallbacks_by_reason == {"context window": 1} and summary.failed_requests == 0
    assert summary.failures_by_endpoint == {"primary": {"context window": 1}, "small": {"context window": 1}}
    # The primary answered: it is up, and with one failure to open it, its circuit is still closed.
    assert session.breaker_states() == {"primary": "closed", "large": "closed"}
    assert session.structured(evidence(10), ClaimRewrite, max_tokens=20).claim and llm.requests == 2


@pytest.mark.integration
def test_with_no_larger_window_the_request_fails_with_the_reason_or_is_cut_when_it_says_so(llm, second_llm, tmp_path):
    llm.context_window_tokens = 200
    model = gateway(
        llm,
        context_window_tokens=200,
        fallbacks=[Endpoint(name="small", base_url=second_llm.base_url, fast_model="small", context_window_tokens=50)],
        trace_path=str(tmp_path / "traces.sqlite"),
    )
    session = model.open_session()
    prompt = evidence(300)
    with pytest.raises(ModelCallError) as failed:
        session.structured(prompt, ClaimRewrite, max_tokens=20)
    assert [(f.endpoint, f.kind) for f in failed.value.failures] == [
        ("primary", "context window"),
        ("small", "context window"),
    ]
    assert not failed.value.outage and "maximum context length is 200 tokens" in str(failed.value)
    assert second_llm.requests == 0 and llm.requests == 1

    answer, trace_id = session.traced_structured(prompt, ClaimRewrite, max_tokens=20, context_overflow="cut")
    assert "characters cut to fit the context window" in answer.claim
    assert llm.requests == 3 and second_llm.requests == 0  # refused again, then asked cut
    sent = llm.calls[-1]["messages"][0]["content"]
    assert sent.startswith("Rewrite the evidence as a claim.\n<evidence>\nharbour0 ") and sent.endswith(
        "harbour299\n</evidence>"
    ), "the instruction and the end of the data block are kept"
    assert len(sent.split()) + 20 <= 200 < len(prompt[0]["content"].split())
    [cut] = session.trace_records([trace_id])
    assert cut["fallback_reason"] == "cut to fit context window" and cut["endpoint"] == "primary"
    assert "characters cut to fit the context window" in str(cut["prompt"])
    summary = session.ledger.summary()
    assert summary.fallbacks_by_reason == {"cut to fit context window": 1}
    assert summary.requests == 2 and summary.failed_requests == 1
    assert session.breaker_states() == {"primary": "closed"}


# How each provider's content-policy refusal reads in the trace.
WORDING = {
    "openai": "safety system",
    "azure": "content management policy",
    "finish_reason": "finish_reason content_filter",
    "refusal": "the model refused: I'm sorry",
}


@pytest.mark.integration
@pytest.mark.parametrize("style", sorted(WORDING))
def test_a_content_policy_refusal_goes_straight_to_the_endpoint_configured_for_it(style, llm, second_llm, tmp_path):
    llm.content_policy = lambda messages: "forbidden" in messages[0]["content"]
    llm.content_policy_style = style
    with FakeOpenAI() as moderated:
        model = gateway(
            llm,
            fallbacks=[
                Endpoint(name="secondary", base_url=second_llm.base_url, fast_model="second"),
                Endpoint(name="moderated", base_url=moderated.base_url, fast_model="moderated"),
            ],
            content_policy_endpoint="moderated",
            trace_path=str(tmp_path / "traces.sqlite"),
            breaker_failures=1,
            max_reasks=2,
        )
        session = model.open_session()
        answer, trace_id = session.traced_structured(evidence(5, topic="forbidden"), ClaimRewrite)
        assert answer.claim.startswith("forbidden0") and moderated.requests == 1
        assert session.structured(evidence(5), ClaimRewrite).claim.startswith(
            "harbour0"
        )  # the primary answers the rest
        assert moderated.requests == 1
    assert llm.requests == 2 and llm.refused == 1, "a refusal is neither retried nor re-asked"
    assert second_llm.requests == 0, "the endpoints in between are not asked"
    rows = by_endpoint(rows_of(session))
    refused = [r for r in rows["primary"] if r["error"]]
    assert [r["error_kind"] for r in refused] == ["content policy"]
    assert WORDING[style] in str(refused[0]["error"]), "the provider's reason is in the trace"
    [answered] = rows["moderated"]
    assert answered["trace_id"] == trace_id and answered["fallback_reason"] == "content policy"
    summary = session.ledger.summary()
    assert summary.fallbacks_by_reason == {"content policy": 1} and summary.failed_requests == 0
    assert set(session.breaker_states().values()) == {"closed"}


@pytest.mark.integration
def test_a_content_policy_refusal_without_an_endpoint_for_it_fails_and_never_opens_the_circuit(llm, second_llm):
    llm.content_policy = lambda messages: "forbidden" in messages[0]["content"]
    llm.content_policy_style = "azure"
    session = gateway(llm, second_llm, breaker_failures=2).open_session()
    for index in range(3):
        with pytest.raises(ModelCallError, match="content management policy") as failed:
            session.structured(evidence(5 + index, topic="forbidden"), ClaimRewrite)
        assert [f.kind for f in failed.value.failures] == ["content policy"] and not failed.value.outage
    assert second_llm.requests == 0 and llm.requests == 3
    assert session.breaker_states() == {"primary": "closed"}
    assert session.structured(evidence(5), ClaimRewrite).claim and llm.requests == 4
    assert session.ledger.summary().failures_by_endpoint == {"primary": {"content policy": 3}}


@pytest.mark.integration
def test_a_content_policy_endpoint_outside_the_chain_is_refused_on_first_use(llm):
    with pytest.raises(ValueError, match="content_policy_endpoint 'moderated' is none of the chain's endpoints"):
        gateway(llm, content_policy_endpoint="moderated").open_session()
    assert llm.requests == 0


@pytest.mark.integration
def test_the_run_report_counts_fallbacks_by_reason(settings, llm, second_llm):
    llm.context_window_tokens = 100
    llm.content_policy = lambda messages: "forbidden" in messages[0]["content"]
    model = gateway(
        llm,
        fallbacks=[Endpoint(name="long", base_url=second_llm.base_url, fast_model="long", context_window_tokens=8000)],
        content_policy_endpoint="long",
        trace_path=settings.trace_location,
    )

    @dg.asset
    def claims(context: dg.AssetExecutionContext, model: ModelResource) -> dg.MaterializeResult:
        with model.session(context) as llm_session:
            answers = llm_session.map_structured(
                [evidence(150), evidence(150, topic="other"), evidence(5, topic="forbidden"), evidence(5)],
                ClaimRewrite,
                max_tokens=20,
            )
        assert all(isinstance(a, ClaimRewrite) for a in answers), answers
        return dg.MaterializeResult()

    result = dg.materialize([claims], resources={"model": model})
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["fallbacks_by_reason"].value == {"context window": 2, "content policy": 1}
    report = RunReport.from_result(result, settings)
    assert report.model_usage.fallbacks_by_reason == {"content policy": 1, "context window": 2}
    assert report.ok and report.model_usage.requests == 4 and report.model_usage.fallbacks == 3
    assert "Fallbacks by reason: content policy x1, context window x2" in report.render(), report.render()


@pytest.mark.integration
def test_a_yaml_step_that_declares_cut_gets_answers_to_its_cut_prompts(llm, tmp_path):
    folder = tmp_path / "step"
    folder.mkdir()
    for name, text in gist_folder(
        GIST_STEP.replace("  prompt: prompt.txt\n", "  prompt: prompt.txt\n  context_overflow: cut\n")
    ).items():
        (folder / name).write_text(text)
    step = LlmStep.from_file(folder / "defs.yaml")
    assert step.call.context_overflow == "cut"
    llm.context_window_tokens = 800  # the step's answers take 400 of it
    llm.scripts[step.answer_model.__name__] = fixed_answer({"gist": "Cranes.", "audience": "general"})
    model = gateway(llm, context_window_tokens=800)
    session = model.open_session()
    step_run = StepRun(context=None, model=model, call=step.call, inputs={}, llm=session, step=step)  # type: ignore[arg-type]
    items = [{"title": "Cranes", "text": " ".join(["crane"] * 1000)}, {"title": "Short", "text": "One crane."}]
    answers = ask_items(step_run, items, ["", ""])
    assert [a.gist for a, _ in answers] == ["Cranes.", "Cranes."]
    assert session.ledger.summary().fallbacks_by_reason == {"cut to fit context window": 1}
    assert llm.refused == 1 and llm.requests == 3, "the long item refused once, then answered cut"


@pytest.mark.unit
def test_a_step_with_an_unknown_context_overflow_fails_loading_at_its_line(tmp_path):
    folder = tmp_path / "step"
    folder.mkdir()
    step = GIST_STEP.replace("  prompt: prompt.txt\n", "  prompt: prompt.txt\n  context_overflow: truncate\n")
    for name, text in gist_folder(step).items():
        (folder / name).write_text(text)
    line = step.splitlines().index("  context_overflow: truncate") + 1
    with pytest.raises(StepDefinitionError, match=rf"defs.yaml:{line}: attributes.context_overflow: unknown"):
        LlmStep.from_file(folder / "defs.yaml")


@pytest.mark.unit
def test_a_cut_keeps_the_instruction_and_the_end_marks_what_it_cut_and_fits_the_estimate():
    system = {"role": "system", "content": "Answer in JSON."}
    long = {"role": "user", "content": "Summarize.\n<doc>\n" + "x" * 10_000 + "\n</doc>"}
    cut = cut_to_fit([system, long], window_tokens=1000, max_tokens=100)
    assert cut is not None and cut[0] == system
    text = cut[1]["content"]
    assert text.startswith("Summarize.\n<doc>\nxxx") and text.endswith("xxx\n</doc>")
    cut_chars = int(text.split("[... ")[1].split(" characters")[0])
    assert (
        len(text) - len(f"\n[... {cut_chars} characters cut to fit the context window]\n")
        == len(long["content"]) - cut_chars
    )
    assert (len(system["content"]) + len(text)) / 3 + 100 <= 1000
    assert cut_to_fit([system, long], window_tokens=20, max_tokens=10) is None, "not even the rest fits"
    assert cut_to_fit([system, long], window_tokens=100_000, max_tokens=10) is None, "it fits: nothing to cut to"


@pytest.mark.integration
def test_a_trace_table_made_before_fallback_reasons_gets_the_column(tmp_path):
    import sqlite3

    path = tmp_path / "traces.sqlite"
    with sqlite3.connect(path) as old:
        old.execute(
            "create table traces (trace_id text primary key, created_at text, run_id text, asset text, tier text, "
            "endpoint text, model text, prompt text, response text, latency_s real, prompt_tokens integer, "
            "completion_tokens integer, cost_usd real, cache_hit integer, fallback integer, attempt integer, "
            "reask integer, error text, request_id text, partition text, error_kind text)"
        )
        old.execute("insert into traces (trace_id, run_id, attempt, reask) values ('old', 'r', 1, 0)")
    store = TraceStore(path)
    store.add(CallRecord(tier="fast", model="m", endpoint="e", fallback_reason="content policy"), [], "{}", "r", "a")
    store.add(
        CallRecord(tier="fast", model="m", endpoint="e", fallback_reason="content policy", reask=1), [], "", "r", "a"
    )
    assert store.fallbacks_by_reason("r") == {"content policy": 1}, "a re-ask on the same endpoint is no new fallback"
    assert store.get("old")["fallback_reason"] is None


@pytest.mark.services
def test_fallback_reasons_are_counted_in_a_postgres_trace_table(postgres_url):
    store = TraceStore(postgres_url)
    for reason in ["context window", "context window", "cut to fit context window", ""]:
        store.add(CallRecord(tier="fast", model="m", endpoint="e", fallback_reason=reason), [], "{}", "run", "a")
    store.add(
        CallRecord(tier="fast", model="m", endpoint="e", attempt=0, fallback_reason="content policy"),
        [],
        "",
        "run",
        "a",
    )
    assert store.fallbacks_by_reason("run") == {"context window": 2, "cut to fit context window": 1}
    assert store.fallbacks_by_reason("another run") == {}
