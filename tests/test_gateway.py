"""The model gateway over real HTTP: fallback, Retry-After, timeouts, the circuit breaker,
re-asks, and the response cache."""

import json
import time

import duckdb
import pytest
from pydantic import BaseModel

from resources import BudgetExceededError, CallLedger, Endpoint, ModelCallError, ModelResource, TraceStore
from tests.conftest import run_digest_job
from tests.fake_openai import FakeOpenAI, Fault


class ClaimRewrite(BaseModel):
    claim: str


PROMPT = [{"role": "user", "content": "Evidence: Acme hired 12 people."}]


@pytest.fixture
def second_llm():
    with FakeOpenAI() as server:
        yield server


def gateway(primary: FakeOpenAI, fallback: FakeOpenAI | None = None, **overrides) -> ModelResource:
    fallbacks = [Endpoint(name="secondary", base_url=fallback.base_url, fast_model="second-fast")] if fallback else []
    options = dict(base_url=primary.base_url, fast_model="first-fast", fallbacks=fallbacks, max_retries=2,
                   backoff_initial_seconds=0.01, backoff_max_seconds=5, timeout_seconds=2)
    return ModelResource(**{**options, **overrides})


def test_falls_back_to_the_second_endpoint_when_the_first_returns_500(llm, second_llm):
    llm.persistent_fault = Fault(status=500)
    ledger = CallLedger()
    answer = gateway(llm, second_llm).structured(PROMPT, ClaimRewrite, ledger=ledger)
    assert answer.claim == "Acme hired 12 people."
    assert llm.requests == 3 and second_llm.requests == 1  # 1 try + 2 retries, then the fallback
    summary = ledger.summary()
    assert summary.fallbacks == 1 and summary.calls_by_model == {"first-fast": 1, "second-fast": 1}


def test_429_waits_for_retry_after_then_succeeds(llm):
    llm.faults = [Fault(status=429, retry_after=1.0)]
    started = time.monotonic()
    ledger = CallLedger()
    gateway(llm).structured(PROMPT, ClaimRewrite, ledger=ledger)
    assert time.monotonic() - started >= 1.0
    assert llm.requests == 2 and ledger.summary().retries == 1


def test_client_errors_are_not_retried(llm):
    llm.persistent_fault = Fault(status=400)
    with pytest.raises(ModelCallError, match="BadRequestError"):
        gateway(llm).structured(PROMPT, ClaimRewrite)
    assert llm.requests == 1


def test_a_hung_endpoint_times_out_and_falls_back(second_llm):
    with FakeOpenAI() as hung:  # its own server: the hung request ends after this test
        hung.persistent_fault = Fault(status=0, delay_seconds=3)
        started = time.monotonic()
        answer = gateway(hung, second_llm, max_retries=0, timeout_seconds=0.5).structured(PROMPT, ClaimRewrite)
        assert answer.claim and time.monotonic() - started < 2.5
        assert second_llm.requests == 1


def test_breaker_opens_after_failures_and_closes_after_cooldown(llm, second_llm):
    model = gateway(llm, second_llm, max_retries=0, breaker_failures=2, breaker_cooldown_seconds=1.0)
    llm.persistent_fault = Fault(status=503)
    for index in range(4):
        model.structured([{"role": "user", "content": f"Evidence: fact {index}."}], ClaimRewrite)
    assert llm.requests == 2  # after two failures the primary is skipped
    assert model.breaker_states()["primary"] == "open"
    llm.persistent_fault = None
    time.sleep(1.1)
    model.structured([{"role": "user", "content": "Evidence: after cooldown."}], ClaimRewrite)
    assert llm.requests == 3 and model.breaker_states()["primary"] == "closed"


def test_malformed_json_is_reasked_and_counted(llm):
    answers = iter(['{"claim": ', '{"claim": "fixed"}'])
    llm.scripts["ClaimRewrite"] = lambda messages: next(answers)
    ledger = CallLedger()
    assert gateway(llm).structured(PROMPT, ClaimRewrite, ledger=ledger).claim == "fixed"
    summary = ledger.summary()
    assert summary.calls == 2 and summary.reasks == 1 and summary.prompt_tokens > 0
    assert "invalid" in llm.calls[1]["messages"][-1]["content"]


def test_budget_stops_further_calls_with_a_clear_error(llm):
    model = gateway(llm, budget_tokens=1)
    model.structured(PROMPT, ClaimRewrite)
    with pytest.raises(BudgetExceededError, match="model budget exhausted"):
        model.structured([{"role": "user", "content": "Evidence: another fact."}], ClaimRewrite)
    assert llm.requests == 1


def test_budget_failure_stops_the_run(settings, llm):
    result = run_digest_job(settings.model_copy(update={"llm_budget_tokens": 500}))
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "signals"
    assert "model budget exhausted" in str(failure.step_failure_data.error.cause or failure.step_failure_data.error)


def test_trace_table_names_prompt_and_model_of_every_draft_claim(settings, llm):
    assert run_digest_job(settings).success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as db:
        drafts = db.execute("select claim_id, trace_id, evidence_sentence from ai_pipelines.drafts").fetchall()
    traces = TraceStore(settings.trace_location)
    assert drafts
    for claim_id, trace_id, evidence in drafts:
        trace = traces.get(trace_id)
        assert trace is not None, claim_id
        assert trace["model"] == "fake-strong" and trace["asset"] == "drafts" and trace["run_id"]
        assert evidence in json.loads(trace["prompt"])[0]["content"]


def test_cached_responses_cost_no_call(llm, tmp_path):
    model = gateway(llm, cache_path=str(tmp_path / "cache.sqlite"))
    model.structured(PROMPT, ClaimRewrite)
    again = gateway(llm, cache_path=str(tmp_path / "cache.sqlite"))
    ledger = CallLedger()
    again.structured(PROMPT, ClaimRewrite, ledger=ledger)
    assert llm.requests == 1 and ledger.summary().cache_hits == 1


def test_bulkhead_bounds_requests_in_flight_per_endpoint(llm):
    llm.persistent_fault = Fault(status=0, delay_seconds=0.2)
    limited = Endpoint(name="limited", base_url=llm.base_url, fast_model="first-fast", max_concurrency=2)
    # Eight threads fan out; the endpoint's own limit of two holds (the primary refuses connections).
    model = ModelResource(base_url="http://127.0.0.1:1/v1", max_retries=0, max_concurrency=8, fallbacks=[limited])
    requests = [[{"role": "user", "content": f"Evidence: fact {i}."}] for i in range(8)]
    assert all(isinstance(r, ClaimRewrite) for r in model.map_structured(requests, ClaimRewrite))
    assert llm.requests == 8 and llm.max_in_flight == 2


def test_long_inputs_route_to_the_long_context_endpoint(llm, second_llm):
    model = gateway(llm, max_input_chars=100).model_copy(
        update={"fallbacks": [Endpoint(name="long-context", base_url=second_llm.base_url, fast_model="long")]}
    )
    model.structured(PROMPT, ClaimRewrite)
    model.structured([{"role": "user", "content": "Evidence: " + "word " * 100}], ClaimRewrite)
    assert llm.requests == 1 and second_llm.requests == 1
