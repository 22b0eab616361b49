"""Spend caps and tokens-per-minute limits shared by every run and process through the gateway's
state store: a call that would break a cap is refused before it is sent and names the cap, its
period and what was spent; a run that hits one fails; an endpoint's minute is waited for; the
figures show in `ai-pipelines spend` and in the usage metadata. Two runs in two processes at once
against one daily cap, on SQLite and on Postgres, never spend past it.

Against the fake OpenAI server, which counts words as tokens: "one two three" is 3 prompt tokens
and the answer {"text": "ok"} 2 completion tokens, so at $1000 per million tokens a call costs
$0.005; its estimate is 5 prompt tokens (13 characters / 3) plus max_tokens 8 = 13 tokens, $0.013.
"""

import json
import logging
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from dagster import AssetExecutionContext, MaterializeResult, asset, materialize
from pydantic import BaseModel

from ai_pipelines.cli import main
from resources import CallRecord, ModelResource, SpendCap
from resources.gateway.errors import BudgetExceededError, SpendCapExceededError
from resources.gateway.spend_limits import SpendLimits
from resources.storage.state_store import StateStore
from tests.conftest import gateway, materialization_metadata
from tests.fake_openai import FakeOpenAI
from tests.spend_cap_runs import CAP, PRICE_PER_MTOK

ROOT = Path(__file__).parent.parent
PROMPT = [{"role": "user", "content": "one two three"}]
PRICES = {"input_price_per_mtok": PRICE_PER_MTOK, "output_price_per_mtok": PRICE_PER_MTOK}


class Echo(BaseModel):
    text: str


@pytest.fixture
def ok(llm: FakeOpenAI) -> FakeOpenAI:
    llm.scripts["Echo"] = lambda messages: {"text": "ok"}
    return llm


def capped(server: FakeOpenAI, state: Path | str, *caps: SpendCap, **overrides: object) -> ModelResource:
    return gateway(server, state_path=str(state), spend_caps=list(caps), **{**PRICES, **overrides})


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def ask(model: ModelResource, tier: str = "fast", run_id: str = "run-1", max_tokens: int = 8) -> None:
    model.open_session(run_id=run_id).structured(PROMPT, Echo, tier=tier, max_tokens=max_tokens)


@pytest.mark.integration
def test_a_call_that_would_break_a_usd_or_token_cap_is_refused_before_it_is_sent(ok, tmp_path):
    model = capped(
        ok,
        tmp_path / "state.sqlite",
        SpendCap(name="monthly-usd", period="month", usd=0.05),
        SpendCap(name="daily-tokens", tokens=20),
    )
    ask(model)
    ask(model)  # 5 + 13 estimated tokens of 20
    with pytest.raises(SpendCapExceededError) as refused:
        ask(model)  # 10 + 13 > 20; the USD cap (0.010 + 0.013 of 0.05) still has room
    assert str(refused.value) == (
        f"spend cap 'daily-tokens' (day {today()} UTC, every tier, every endpoint): spent 10 of 20 tokens "
        "(+13 for this call); call refused before it was sent"
    )
    assert isinstance(refused.value, BudgetExceededError), "it stops a step as a spent run budget does"
    assert ok.requests == 2, "refused before anything was sent"

    # Every process sharing the state store sees the same spend: a new resource instance is refused too.
    with pytest.raises(SpendCapExceededError, match="spend cap 'daily-tokens'"):
        ask(capped(ok, tmp_path / "state.sqlite", SpendCap(name="daily-tokens", tokens=20)), run_id="run-2")
    standing = {c.name: c for c in model._runtime().spend_caps()}
    assert standing["daily-tokens"].spent_tokens == 10 and standing["daily-tokens"].remaining_tokens == 10
    month = standing["monthly-usd"]
    assert (month.period_start, month.spent_usd, month.remaining_usd) == (today()[:7], 0.01, 0.04)

    # A USD cap of its own refuses by its own measure, naming the dollars.
    with pytest.raises(SpendCapExceededError) as by_usd:
        ask(capped(ok, tmp_path / "state.sqlite", SpendCap(name="daily-usd", usd=0.02)))
    assert "spend cap 'daily-usd' (day " in str(by_usd.value)
    assert "spent $0.0100 of $0.0200 (+$0.0130 for this call)" in str(by_usd.value)


@pytest.mark.integration
def test_a_cap_counts_only_its_tier_and_endpoint(ok, tmp_path):
    model = capped(
        ok,
        tmp_path / "state.sqlite",
        SpendCap(name="strong-monthly", period="month", usd=0.015, tier="strong"),
        SpendCap(name="secondary-daily", usd=0.001, endpoint="secondary"),
    )
    for _ in range(3):
        ask(model, tier="fast")  # neither cap counts the primary's fast calls
    ask(model, tier="strong")
    with pytest.raises(SpendCapExceededError) as refused:
        ask(model, tier="strong")
    assert str(refused.value) == (
        f"spend cap 'strong-monthly' (month {today()[:7]} UTC, tier strong, every endpoint): spent $0.0050 of "
        "$0.0150 (+$0.0130 for this call); call refused before it was sent"
    )
    ask(model, tier="fast")
    assert ok.requests == 5
    standing = {c.name: c for c in model._runtime().spend_caps()}
    assert standing["strong-monthly"].spent_tokens == 5 and standing["secondary-daily"].spent_tokens == 0


@pytest.mark.integration
def test_without_caps_or_limits_the_state_store_is_never_opened(ok, tmp_path):
    state = tmp_path / "state.sqlite"
    ask(gateway(ok, state_path=str(state), **PRICES))
    ask(capped(ok, "", SpendCap(name="daily-usd", usd=0.000001)))  # no store: nothing enforced, nothing written
    assert ok.requests == 2 and not state.exists()


@asset
def fan_out(context: AssetExecutionContext, model: ModelResource) -> MaterializeResult:
    with model.session(context) as llm:
        llm.map_traced_structured(
            [[{"role": "user", "content": f"item {i} two three"}] for i in range(6)], Echo, max_tokens=8
        )
    return MaterializeResult()


@pytest.mark.integration
def test_a_run_that_hits_a_cap_fails_naming_it_and_a_run_within_it_shows_the_cap(ok, tmp_path):
    state = tmp_path / "state.sqlite"
    within = materialize([fan_out], resources={"model": capped(ok, state, SpendCap(name=CAP, usd=1.0))})
    assert within.success
    metadata = materialization_metadata(within, "fan_out")
    spent = metadata["cost_usd"]
    assert spent > 0
    assert metadata["spend_caps"] == {
        CAP: {"period": f"day {today()}", "spent_usd": spent, "limit_usd": 1.0, "spent_tokens": 36, "limit_tokens": 0}
    }

    # The same cap, lowered below what is already spent plus one call: the next run fails at once.
    over = materialize(
        [fan_out],
        resources={"model": capped(ok, state, SpendCap(name=CAP, usd=spent + 0.01))},
        raise_on_error=False,
    )
    assert not over.success
    [failure] = over.get_step_failure_events()
    message = str(failure.step_failure_data.error)
    assert "SpendCapExceededError" in message and f"spend cap '{CAP}' (day {today()} UTC" in message
    assert "call refused before it was sent" in message
    assert ok.requests == 6


@pytest.mark.integration
def test_an_endpoint_over_its_tokens_per_minute_waits_for_room(ok, tmp_path, caplog):
    state = tmp_path / "state.sqlite"
    model = gateway(ok, state_path=str(state), tokens_per_minute=30, **PRICES)
    # Another process sent the endpoint 25 tokens 59.5 s ago: 25 + 13 > 30 until they leave the minute.
    other = SpendLimits(model, clock=lambda: time.time() - 59.5)
    primary = model.chain()[0]
    held = other.reserve(primary, "fast", PROMPT, 8, "other-run")
    other.settle(held, CallRecord(tier="fast", model="m", endpoint="primary", prompt_tokens=20, completion_tokens=5))
    limits = model._runtime().limits
    assert [m.tokens for m in limits.last_minute()] == [25]

    with caplog.at_level(logging.INFO, logger="ai_pipelines.model"):
        ask(model)
        ask(model)  # 5 + 13 of 30: room at once
    assert limits.waits == 1 and limits.waited_seconds > 0
    assert [r.message for r in caplog.records if "Waiting for room" in r.message] == [
        "Waiting for room under endpoint 'primary''s 30 tokens per minute (a call of up to 13 tokens)"
    ]
    assert ok.requests == 2

    with pytest.raises(SpendCapExceededError, match="may use 105 tokens .* more than its 30 a minute"):
        ask(model, max_tokens=100)
    assert ok.requests == 2


@pytest.mark.integration
def test_the_spend_command_shows_each_cap_and_each_endpoints_minute(ok, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AI_PIPELINES_POSTGRES_URL", raising=False)
    monkeypatch.setenv("AI_PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AI_PIPELINES_LLM_BASE_URL", ok.base_url)
    monkeypatch.setenv("AI_PIPELINES_LLM_CACHE", "false")
    assert main(["spend"]) == 0
    assert "No spend caps or tokens-per-minute limits are set" in capsys.readouterr().out

    caps = [
        {"name": "daily-usd", "usd": 1},
        {"name": "strong-tokens", "period": "month", "tokens": 1000, "tier": "strong"},
    ]
    monkeypatch.setenv("AI_PIPELINES_LLM_SPEND_CAPS", json.dumps(caps))
    monkeypatch.setenv("AI_PIPELINES_LLM_TOKENS_PER_MINUTE", "5000")
    monkeypatch.setenv("AI_PIPELINES_LLM_INPUT_PRICE_PER_MTOK", str(PRICE_PER_MTOK))
    monkeypatch.setenv("AI_PIPELINES_LLM_OUTPUT_PRICE_PER_MTOK", str(PRICE_PER_MTOK))
    from ai_pipelines.definitions import build_resources
    from ai_pipelines.settings import load_settings

    model = build_resources(load_settings())["model"]
    ask(model, tier="fast")
    ask(model, tier="strong")
    assert main(["spend"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"daily-usd: day from {today()} UTC, every tier, every endpoint: spent $0.0100 and 10 tokens of $1.0000; "
        "remaining $0.9900",
        f"strong-tokens: month from {today()[:7]} UTC, tier strong, every endpoint: spent $0.0050 and 5 tokens of "
        "1000 tokens; remaining 995 tokens",
        "primary: 10 tokens in the last minute of 5000 a minute",
    ]
    assert main(["spend", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["spent_tokens"], c["remaining_tokens"]) for c in figures["spend_caps"]] == [
        ("daily-usd", 10, None),
        ("strong-tokens", 5, 995),
    ]
    assert figures["tokens_per_minute"] == [{"endpoint": "primary", "tokens": 10, "limit": 5000}]


# --- Two runs at once, each in its own process -----------------------------------------------------------

CAP_USD = 0.2  # about 25 of the 60 calls the two runs ask for ($0.008 each; 17 tokens, $0.017, reserved)
REQUESTS = 30
IN_FLIGHT = 2 * 4  # two processes, max_concurrency 4 each


def two_runs_at_once(server: FakeOpenAI, state: str, tmp_path: Path) -> list[dict]:
    """Both processes import Dagster, say ready, then start their calls on the same line; the
    server answers once both have as many calls in flight as their concurrency allows."""
    outs = [tmp_path / f"run-{i}.json" for i in range(2)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.spend_cap_runs", server.base_url, state, str(CAP_USD), str(REQUESTS), str(o)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for o in outs
    ]
    try:
        for run in runs:
            assert run.stdout is not None and run.stdout.readline().strip() == "ready"
        # Answers are held until both runs have their calls in flight: on a busy machine one
        # process can otherwise finish before the other has built its run, and nothing overlaps.
        server.answering.clear()
        for run in runs:
            assert run.stdin is not None
            run.stdin.write("go\n")
            run.stdin.flush()
        deadline = time.monotonic() + 120
        while server.in_flight < IN_FLIGHT and time.monotonic() < deadline and all(r.poll() is None for r in runs):
            time.sleep(0.05)
        server.answering.set()
        for run in runs:
            assert run.wait(timeout=120) == 0
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
    return [json.loads(o.read_text()) for o in outs]


def assert_the_cap_held(server: FakeOpenAI, state: str, tmp_path: Path) -> None:
    server.scripts["Echo"] = lambda messages: {"text": "ok"}
    server.latency_seconds = 0.01  # calls of both runs overlap in flight

    runs = two_runs_at_once(server, state, tmp_path)

    store = StateStore(state, "select 1")
    settled = store.fetchall("select run_id, usd, tokens, created_at from spend_entries where settled = 1")
    assert store.fetchall("select id from spend_entries where settled = 0") == [], "no reservation left open"
    settled_usd = sum(usd for _, usd, _, _ in settled)
    largest = max(usd for _, usd, _, _ in settled)
    assert settled_usd <= CAP_USD + IN_FLIGHT * largest, "never past the cap by more than the calls in flight"
    assert settled_usd <= CAP_USD, "with reservations, not past it at all"
    assert settled_usd > CAP_USD / 2, "the cap, not something else, stopped the calls"

    refusals = [message for run in runs for message in run["refusals"]]
    assert refusals and all(f"spend cap '{CAP}' (day {today()} UTC" in m for m in refusals), refusals
    assert all("call refused before it was sent" in m for m in refusals)
    failed = [run for run in runs if not run["success"]]
    assert failed and all(any(f"SpendCapExceededError: spend cap '{CAP}'" in f for f in r["failures"]) for r in failed)

    answered = [e for e in server.answered if e.schema == "Echo" and e.status == 200]
    assert len(answered) == len(settled) == sum(run["calls"] for run in runs), "every answer paid, nothing else"
    assert sum(tokens for _, _, tokens, _ in settled) == sum(run["tokens"] for run in runs)
    assert len(answered) + len(refusals) == 2 * REQUESTS
    by_run: dict[str, list[float]] = {}
    for run_id, _, _, created_at in settled:
        by_run.setdefault(run_id, []).append(created_at)
    assert len(by_run) == 2, "both runs made calls"
    first, second = by_run.values()
    assert max(min(first), min(second)) < min(max(first), max(second)), "the two runs' calls overlapped"


@pytest.mark.integration
def test_two_runs_at_once_never_spend_past_a_daily_cap_on_sqlite(ok, tmp_path):
    assert_the_cap_held(ok, str(tmp_path / "state.sqlite"), tmp_path)


@pytest.mark.services
def test_two_runs_at_once_never_spend_past_a_daily_cap_on_postgres(ok, postgres_url, tmp_path):
    assert_the_cap_held(ok, postgres_url, tmp_path)
