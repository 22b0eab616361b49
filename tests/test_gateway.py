"""The model gateway over real HTTP: fallback, Retry-After, timeouts, the circuit breaker,
re-asks, and the response cache. Calls go through sessions opened outside a run, each with
its own ledger."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import BaseModel

from resources import (
    BudgetExceededError,
    Endpoint,
    ModelCallError,
    ModelResource,
    StructuredOutputError,
    TraceStore,
)
from resources.gateway.response_cache import CachedResponse, ResponseCache
from tests.conftest import gateway, run_digest_job, warehouse_query
from tests.fake_openai import FakeOpenAI, Fault

pytestmark = pytest.mark.integration


class ClaimRewrite(BaseModel):
    claim: str


def evidence(text: str) -> list[dict[str, str]]:
    """A request as the product phrases it: the evidence in a delimited data block."""
    return [{"role": "user", "content": f"Rewrite the evidence as a claim.\n<evidence>\n{text}\n</evidence>"}]


PROMPT = evidence("Acme hired 12 people.")


def test_falls_back_to_the_second_endpoint_when_the_first_returns_500(llm, second_llm):
    llm.persistent_fault = Fault(status=500)
    session = gateway(llm, second_llm).open_session()
    answer = session.structured(PROMPT, ClaimRewrite)
    assert answer.claim == "Acme hired 12 people."
    assert llm.requests == 3 and second_llm.requests == 1  # 1 try + 2 retries, then the fallback
    summary = session.ledger.summary()
    assert summary.fallbacks == 1 and summary.calls_by_model == {"first-fast": 1, "second-fast": 1}


def test_429_waits_for_retry_after_then_succeeds(llm):
    llm.faults = [Fault(status=429, retry_after=1.0)]
    started = time.monotonic()
    session = gateway(llm).open_session()
    session.structured(PROMPT, ClaimRewrite)
    assert time.monotonic() - started >= 1.0
    assert llm.requests == 2 and session.ledger.summary().retries == 1


def test_client_errors_are_not_retried(llm):
    llm.persistent_fault = Fault(status=400)
    with pytest.raises(ModelCallError, match="BadRequestError"):
        gateway(llm).open_session().structured(PROMPT, ClaimRewrite)
    assert llm.requests == 1


def test_a_hung_endpoint_times_out_and_falls_back(second_llm):
    with FakeOpenAI() as hung:  # its own server: the hung request ends after this test
        hung.persistent_fault = Fault(status=0, delay_seconds=3)
        started = time.monotonic()
        model = gateway(hung, second_llm, max_retries=0, timeout_seconds=0.5)
        answer = model.open_session().structured(PROMPT, ClaimRewrite)
        assert answer.claim and time.monotonic() - started < 2.5
        assert second_llm.requests == 1


def test_breaker_opens_after_failures_and_closes_after_cooldown(llm, second_llm):
    model = gateway(llm, second_llm, max_retries=0, breaker_failures=2, breaker_cooldown_seconds=1.0)
    session = model.open_session()
    llm.persistent_fault = Fault(status=503)
    for index in range(4):
        session.structured([{"role": "user", "content": f"Evidence: fact {index}."}], ClaimRewrite)
    assert llm.requests == 2  # after two failures the primary is skipped
    assert session.breaker_states()["primary"] == "open"
    llm.persistent_fault = None
    time.sleep(1.1)
    session.structured([{"role": "user", "content": "Evidence: after cooldown."}], ClaimRewrite)
    assert llm.requests == 3 and session.breaker_states()["primary"] == "closed"


def test_a_half_open_probe_answered_invalidly_by_the_last_endpoint_closes_the_circuit(llm):
    """The last endpoint's bad answers never open its circuit; a probe that gets one must
    not leave the circuit waiting for a probe that already came back."""
    model = gateway(llm, max_retries=0, breaker_failures=1, breaker_cooldown_seconds=0.2)
    llm.persistent_fault = Fault(status=503)
    with pytest.raises(ModelCallError):
        model.open_session().structured(PROMPT, ClaimRewrite)
    assert model.open_session().breaker_states()["primary"] == "open"
    llm.persistent_fault = Fault(status=0, content="not json at all")
    time.sleep(0.3)
    with pytest.raises(ModelCallError):  # the probe: answered, invalidly, on every re-ask
        model.open_session().structured(PROMPT, ClaimRewrite)
    llm.persistent_fault = None
    session = model.open_session()  # a new computation: the invalid answer is not remembered
    assert session.structured(PROMPT, ClaimRewrite).claim  # allowed, and answered
    assert session.breaker_states()["primary"] == "closed"


def test_malformed_json_is_reasked_and_counted(llm):
    answers = iter(['{"claim": ', '{"claim": "fixed"}'])
    llm.scripts["ClaimRewrite"] = lambda messages: next(answers)
    session = gateway(llm).open_session()
    assert session.structured(PROMPT, ClaimRewrite).claim == "fixed"
    summary = session.ledger.summary()
    assert summary.calls == 2 and summary.reasks == 1 and summary.prompt_tokens > 0
    assert "invalid" in llm.calls[1]["messages"][-1]["content"]


def test_budget_stops_further_calls_with_a_clear_error(llm):
    session = gateway(llm, budget_tokens=1).open_session()
    session.structured(PROMPT, ClaimRewrite)
    with pytest.raises(BudgetExceededError, match="model budget exhausted"):
        session.structured([{"role": "user", "content": "Evidence: another fact."}], ClaimRewrite)
    assert llm.requests == 1


def test_budget_failure_stops_the_run(settings, llm):
    result = run_digest_job(settings.model_copy(update={"llm_budget_tokens": 500}))
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "signals"
    assert "model budget exhausted" in str(failure.step_failure_data.error.cause or failure.step_failure_data.error)


def test_trace_table_names_prompt_and_model_of_every_draft_claim(settings, llm):
    assert run_digest_job(settings).success
    drafts = warehouse_query(settings, "select claim_id, trace_id, evidence_sentence from ai_pipelines.drafts")
    traces = TraceStore(settings.trace_location)
    assert drafts
    for claim_id, trace_id, evidence in drafts:
        trace = traces.get(trace_id)
        assert trace is not None, claim_id
        assert trace["model"] == "fake-strong" and trace["asset"] == "drafts" and trace["run_id"]
        assert evidence in json.loads(trace["prompt"])[0]["content"]


def test_cached_responses_cost_no_call(llm, tmp_path):
    model = gateway(llm, cache_path=str(tmp_path / "cache.sqlite"))
    model.open_session().structured(PROMPT, ClaimRewrite)
    again = gateway(llm, cache_path=str(tmp_path / "cache.sqlite")).open_session()
    again.structured(PROMPT, ClaimRewrite)
    assert llm.requests == 1 and again.ledger.summary().cache_hits == 1


def test_bulkhead_bounds_requests_in_flight_per_endpoint(llm):
    llm.persistent_fault = Fault(status=0, delay_seconds=0.2)
    limited = Endpoint(name="limited", base_url=llm.base_url, fast_model="first-fast", max_concurrency=2)
    # Eight threads fan out; the endpoint's own limit of two holds (the primary refuses connections).
    model = ModelResource(base_url="http://127.0.0.1:1/v1", max_retries=0, max_concurrency=8, fallbacks=[limited])
    requests = [[{"role": "user", "content": f"Evidence: fact {i}."}] for i in range(8)]
    assert all(isinstance(r, ClaimRewrite) for r in model.open_session().map_structured(requests, ClaimRewrite))
    assert llm.requests == 8 and llm.max_in_flight == 2


def test_long_inputs_route_to_the_long_context_endpoint(llm, second_llm):
    model = gateway(llm, max_input_chars=100).model_copy(
        update={"fallbacks": [Endpoint(name="long-context", base_url=second_llm.base_url, fast_model="long")]}
    )
    session = model.open_session()
    session.structured(PROMPT, ClaimRewrite)
    session.structured([{"role": "user", "content": "Evidence: " + "word " * 100}], ClaimRewrite)
    assert llm.requests == 1 and second_llm.requests == 1


def numbered(count: int, word: str = "fact") -> list[list[dict[str, str]]]:
    return [evidence(f"{word} {i}.") for i in range(count)]


def test_an_endpoint_answering_invalid_json_fails_over_and_nothing_invalid_is_cached(llm, second_llm, tmp_path):
    """Issue 10, defect 4: a primary that always answers malformed JSON took every request
    (138 calls), the fallback none, and the cached failures were replayed after recovery."""
    llm.scripts["ClaimRewrite"] = lambda messages: '{"claim": '
    cache = str(tmp_path / "cache.sqlite")
    requests = numbered(12)
    model = gateway(llm, second_llm, max_reasks=2, breaker_failures=3, breaker_cooldown_seconds=600, cache_path=cache)
    session = model.open_session()
    ledger = session.ledger
    answers = [session.structured(r, ClaimRewrite) for r in requests]
    assert [a.claim for a in answers] == [f"fact {i}." for i in range(12)]
    assert second_llm.requests == 12  # every request answered by the fallback
    assert llm.requests == 3 * 3  # 1 + max_reasks per request, until its breaker opened after 3 requests
    assert session.breaker_states()["primary"] == "open"
    failed = [r for r in ledger.records if r.endpoint == "primary" and r.sent]
    assert len(failed) == 9 and all(r.error_kind == "invalid output" for r in failed)
    assert "invalid output after 3 attempts" in failed[-1].error
    assert ledger.summary().failures_by_endpoint == {"primary": {"invalid output": 9, "circuit open": 9}}

    # The primary recovers: every answer comes from the cache, and it is the valid one.
    llm.reset()
    second_llm.reset()
    again = gateway(llm, second_llm, cache_path=cache).open_session()
    assert [again.structured(r, ClaimRewrite).claim for r in requests] == [a.claim for a in answers]
    assert llm.requests == 0 and second_llm.requests == 0 and again.ledger.summary().cache_hits == 12


def test_invalid_answers_are_never_replayed_after_the_endpoint_recovers(llm, tmp_path):
    llm.scripts["ClaimRewrite"] = lambda messages: '{"claim": '
    cache = str(tmp_path / "cache.sqlite")
    with pytest.raises(StructuredOutputError):
        gateway(llm, cache_path=cache).open_session().structured(PROMPT, ClaimRewrite)
    assert llm.requests == 3
    llm.reset()
    answer = gateway(llm, cache_path=cache).open_session().structured(PROMPT, ClaimRewrite)
    assert answer.claim == "Acme hired 12 people."
    assert llm.requests == 1


def test_an_invalid_cached_entry_is_ignored_and_overwritten(llm, tmp_path):
    cache = str(tmp_path / "cache.sqlite")
    gateway(llm, cache_path=cache).open_session().structured(PROMPT, ClaimRewrite)
    store = ResponseCache(cache)
    [(key,)] = store._db.fetchall("select key from responses")
    store.put(
        key, CachedResponse(content='{"nope": 1}', model="m", endpoint="primary", prompt_tokens=0, completion_tokens=0)
    )
    answer = gateway(llm, cache_path=cache).open_session().structured(PROMPT, ClaimRewrite)
    assert answer.claim == "Acme hired 12 people."
    assert llm.requests == 2
    assert ClaimRewrite.model_validate_json(store.get(key).content).claim == "Acme hired 12 people."


def test_retries_of_failed_calls_are_counted_and_the_error_names_the_outage(llm, second_llm, tmp_path):
    """Issue 10, defect 7: the drafts metadata said 0 retries where 12 happened."""
    llm.persistent_fault = Fault(status=503, retry_after=0)  # Retry-After 0: retry at once, no backoff to sit out
    second_llm.persistent_fault = Fault(status=503, retry_after=0)
    model = gateway(
        llm,
        second_llm,
        max_retries=2,
        breaker_failures=2,
        max_concurrency=1,
        trace_path=str(tmp_path / "traces.sqlite"),
    )
    session = model.open_session(run_id="run-outage", asset="drafts")
    ledger = session.ledger
    results = session.map_structured(numbered(4), ClaimRewrite)
    assert all(isinstance(r, ModelCallError) and r.outage and not r.invalid_output for r in results)
    assert [(f.endpoint, f.kind, f.attempts) for f in results[0].failures] == [
        ("primary", "503", 3),
        ("secondary", "503", 3),
    ]
    assert [(f.endpoint, f.kind) for f in results[3].failures] == [
        ("primary", "circuit open"),
        ("secondary", "circuit open"),
    ]
    assert "(outage): primary (first-fast): InternalServerError: Error code: 503" in str(results[0])
    assert llm.requests == second_llm.requests == 6  # two requests, 1 try + 2 retries each; then both circuits open
    summary = ledger.summary()
    assert (summary.calls, summary.retries, summary.failed_calls) == (4, 8, 4)
    assert (summary.requests, summary.failed_requests, summary.outage_requests) == (4, 4, 4)
    assert summary.failures_by_endpoint["primary"] == {"503": 2, "circuit open": 2}
    counts = TraceStore(str(tmp_path / "traces.sqlite")).failures_by_endpoint("run-outage")
    assert [(c.endpoint, c.kind, c.count, c.attempts, c.outage) for c in counts] == [
        ("primary", "503", 2, 6, True),
        ("primary", "circuit open", 2, 0, True),
        ("secondary", "503", 2, 6, True),
        ("secondary", "circuit open", 2, 0, True),
    ]


def test_invalid_output_is_not_called_an_outage(llm):
    llm.scripts["ClaimRewrite"] = lambda messages: "not json"
    session = gateway(llm).open_session()
    [result] = session.map_structured([PROMPT], ClaimRewrite)
    assert isinstance(result, ModelCallError) and result.invalid_output and not result.outage
    summary = session.ledger.summary()
    assert summary.failed_requests == 1 and summary.outage_requests == 0 and summary.requests == 1


def test_ledger_summarizes_one_partition(llm):
    """Issue 10, defect 9: each partition's metadata held the whole run's totals."""
    session = gateway(llm).open_session()
    ledger = session.ledger
    requests = numbered(5)
    partitions = ["doc-a", "doc-a", "doc-b", "doc-c", "doc-c"]
    session.map_traced_structured(requests, ClaimRewrite, partitions=partitions)
    assert ledger.summary().requests == 5
    assert ledger.summary(partition="doc-a").requests == 2 and ledger.summary(partition="doc-b").calls == 1
    assert sum(ledger.summary(partition=p).prompt_tokens for p in set(partitions)) == ledger.summary().prompt_tokens


def test_a_provider_echoing_the_key_never_puts_it_in_errors_traces_or_ledgers(llm, second_llm, tmp_path):
    """Issue 10, defect 3: a 401 message can carry the key into traces, ledgers and logs."""
    secret = "sk-planted-gateway-0123456789"
    llm.persistent_fault = Fault(status=401, message="Incorrect API key provided: {api_key}")
    second_llm.persistent_fault = Fault(status=401, message="Incorrect API key provided: {api_key}")
    fallbacks = [Endpoint(name="secondary", base_url=second_llm.base_url, api_key=secret + "-2")]
    model = gateway(llm, api_key=secret, fallbacks=fallbacks, trace_path=str(tmp_path / "traces.sqlite"))
    session = model.open_session(run_id="run-401")
    ledger = session.ledger
    with pytest.raises(ModelCallError) as raised:
        session.structured(PROMPT, ClaimRewrite)
    assert "Incorrect API key provided" in str(raised.value)
    assert secret not in str(raised.value) and secret not in repr(raised.value.failures)
    assert all(secret not in r.error for r in ledger.records) and ledger.records
    rows = TraceStore(str(tmp_path / "traces.sqlite"))._db.fetchall("select * from traces")
    assert rows and secret not in repr(rows)


def test_a_lone_endpoint_answering_badly_is_not_shut_off(llm):
    """With nowhere to fall back to, a run of invalid answers (a small local model) must not
    open the breaker: later requests still reach the endpoint and succeed."""
    bad = {"left": 6}

    def sometimes_invalid(messages):
        if bad["left"] > 0:
            bad["left"] -= 1
            return "not json"
        return {"claim": "Acme opened a plant in Porto with 120 staff."}

    llm.scripts["ClaimRewrite"] = sometimes_invalid
    session = gateway(llm, breaker_failures=1, max_reasks=1).open_session()
    results = [session.map_structured([p], ClaimRewrite)[0] for p in numbered(5)]
    assert [isinstance(r, ClaimRewrite) for r in results] == [False, False, False, True, True]
    assert session.breaker_states() == {"primary": "closed"}


def test_identical_requests_in_flight_at_once_are_sent_once(llm, tmp_path):
    """Two drafts holding the same sentence ask the same revision at the same moment: one call."""
    session = gateway(llm, cache_path=str(tmp_path / "cache.sqlite")).open_session()
    llm.answering.clear()  # hold the first answer until every copy has been asked
    pool = ThreadPoolExecutor(max_workers=4)
    futures = [pool.submit(session.structured, PROMPT, ClaimRewrite) for _ in range(4)]
    while not llm.received:
        time.sleep(0.01)
    llm.answering.set()
    answers = [future.result(timeout=30) for future in futures]
    pool.shutdown()
    assert {a.claim for a in answers} == {"Acme hired 12 people."}
    assert llm.requests == 1
    summary = session.ledger.summary()
    assert (summary.requests, summary.cache_hits) == (4, 3)


def test_a_request_that_stayed_invalid_is_not_asked_again_in_the_same_computation(llm):
    """At temperature 0 the same conversation gets the same answer: a second identical request of
    the same session (an asset computation) fails at once, with the first one's reasons; another session asks."""
    llm.scripts["ClaimRewrite"] = lambda messages: '{"wrong": "shape"}'
    model = gateway(llm, max_reasks=1)
    session = model.open_session()
    with pytest.raises(StructuredOutputError):
        session.structured(PROMPT, ClaimRewrite)
    assert llm.requests == 2  # the ask and its re-ask
    with pytest.raises(StructuredOutputError, match="wrong|invalid"):
        session.structured(PROMPT, ClaimRewrite)
    assert llm.requests == 2
    summary = session.ledger.summary()
    assert (summary.requests, summary.failed_requests, summary.calls) == (2, 2, 2)
    with pytest.raises(StructuredOutputError):
        model.open_session().structured(PROMPT, ClaimRewrite)
    assert llm.requests == 4
    with pytest.raises(StructuredOutputError):  # sampled (a vote): each draw is its own
        session.structured(PROMPT, ClaimRewrite, temperature=0.7)
    assert llm.requests == 6
