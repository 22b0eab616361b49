"""A slow model is not an outage: an endpoint that takes its deadlines from the work is waited
for however slowly it answers, while one that refuses connections or fails with 5xx still
opens its circuit breaker and is reported as a MODEL OUTAGE.

The servers here answer slower than the deadline floor, so a fixed timeout of the floor's
length would count every answer as a timeout (the first test shows that it does)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import BaseModel

from ai_pipelines.run_report import RunReport
from ai_pipelines.settings import Settings
from resources import ModelCallError
from tests.conftest import fake_settings, gateway, run_digest_job
from tests.fake_openai import FakeOpenAI, Fault

pytestmark = pytest.mark.integration

FLOOR = 0.2  # seconds: the shortest deadline, shorter than every answer below
LATENCY = 0.6  # seconds every answer of the slow server takes


class ClaimRewrite(BaseModel):
    claim: str


def prompts(count: int) -> list[list[dict[str, str]]]:
    return [
        [
            {
                "role": "user",
                "content": f"Rewrite the evidence as a claim.\n<evidence>\nAcme hired {n} people.\n</evidence>",
            }
        ]
        for n in range(count)
    ]


def refused_url() -> str:
    """An address where nothing listens: connections are refused, as by a server that died."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def slow() -> FakeOpenAI:
    with FakeOpenAI() as server:  # its own server: requests cut off by a timeout end with it
        server.latency_seconds = LATENCY
        yield server


def test_a_slow_endpoint_is_waited_for_where_a_fixed_timeout_of_the_floor_calls_it_an_outage(slow):
    model = gateway(slow, timeout_seconds=0, deadline_floor_seconds=FLOOR, start_tokens_per_s=50, breaker_failures=2)
    adaptive = model.open_session()
    answers = adaptive.map_structured(prompts(6), ClaimRewrite)
    assert all(isinstance(a, ClaimRewrite) for a in answers), answers
    summary = adaptive.ledger.summary()
    assert (summary.requests, summary.failed_requests, summary.outage_requests, summary.retries) == (6, 0, 0, 0)
    assert slow.requests == 6 and adaptive.breaker_states() == {"primary": "closed"}
    # The pace was measured from the answers: a few tokens in 0.6 s is far under the starting 50/s.
    assert adaptive.endpoint_paces()["primary"] < 50

    fixed = gateway(slow, timeout_seconds=FLOOR, max_retries=0, breaker_failures=2).open_session()
    failed = fixed.map_structured(prompts(3), ClaimRewrite)
    assert all(isinstance(f, ModelCallError) and f.outage for f in failed), failed
    assert fixed.breaker_states() == {"primary": "open"}


@pytest.mark.parametrize("dead", ["refused", "503"])
def test_a_dead_endpoint_that_takes_its_deadlines_from_the_work_still_opens_its_breaker(dead):
    with FakeOpenAI() as server:
        server.persistent_fault = Fault(status=503)
        url = refused_url() if dead == "refused" else server.base_url
        session = gateway(
            server, base_url=url, timeout_seconds=0, deadline_floor_seconds=FLOOR, max_retries=1, breaker_failures=2
        ).open_session()
        failures = []
        for prompt in prompts(4):  # one after another, so the breaker's opening shows
            with pytest.raises(ModelCallError) as failed:
                session.structured(prompt, ClaimRewrite)
            failures.append(failed.value)
    assert all(isinstance(f, ModelCallError) and f.outage for f in failures), failures
    assert session.breaker_states() == {"primary": "open"}
    assert any(f.kind == "circuit open" for e in failures for f in e.failures)  # later requests were not sent


def test_a_lone_endpoint_that_refuses_requests_but_answers_is_not_shut_off():
    """A 400 (a prompt too long for the embedded model's context, say) is an answer: the server is up."""
    with FakeOpenAI() as server:
        server.persistent_fault = Fault(status=400)
        session = gateway(server, timeout_seconds=0, max_retries=0, breaker_failures=2).open_session()
        for prompt in prompts(4):
            with pytest.raises(ModelCallError) as failed:
                session.structured(prompt, ClaimRewrite)
            assert not failed.value.outage
        assert server.requests == 4 and session.breaker_states() == {"primary": "closed"}


def slow_settings(data_dir: Path, server: FakeOpenAI, **changes: object) -> Settings:
    settings = fake_settings(data_dir, server)
    return settings.model_copy(
        update={
            "llm_timeout_seconds": 0.0,
            "llm_deadline_floor_seconds": FLOOR,
            "llm_start_tokens_per_s": 50.0,
            "llm_backoff_initial_seconds": 0.01,
            **changes,
        }
    )


def breaker_states(result) -> set[str]:
    return {
        state
        for event in result.get_asset_materialization_events()
        for key, value in event.materialization.metadata.items()
        if key == "breaker_states"
        for state in value.value.values()
    }


def test_a_digest_run_on_a_slow_model_has_no_outage_and_on_a_dead_one_reports_it(tmp_path):
    with FakeOpenAI() as server:
        server.latency_seconds = 0.3
        settings = slow_settings(tmp_path / "slow", server)
        result = run_digest_job(settings)
        report = RunReport.from_result(result, settings)
        rendered = report.render()
        usage = report.model_usage
        print("\nSLOW MODEL run:", rendered.splitlines()[0], "requests", usage.requests, "server", server.requests)
        assert result.success and report.ok, rendered
        assert "MODEL OUTAGE" not in rendered and "DEGRADED" not in rendered
        assert usage.requests > 20 and usage.failed_requests == 0 and usage.outage_requests == 0
        assert usage.retries == 0  # not one answer was cut off and asked again
        assert breaker_states(result) == {"closed"}
        assert (settings.output_dir / "digest.md").exists()

    dead = slow_settings(tmp_path / "dead", server, llm_base_url=refused_url())
    result = run_digest_job(dead)
    report = RunReport.from_result(result, dead)
    rendered = report.render()
    assert not report.ok and report.model_usage.outage, rendered
    assert "MODEL OUTAGE" in rendered and "connection error" in rendered and "circuit open" in rendered, rendered
    assert "open" in breaker_states(result)
