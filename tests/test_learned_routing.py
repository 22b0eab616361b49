"""Routing that learns from a step's checks: a YAML step with `routing:` sends each item to the
cheapest tier whose measured pass rate meets its target, keeps what it measured in the
gateway's state store for the next run, and lets a person pin a tier.

The fake server is scripted per model: the fast model answers easy items well and hard ones
outside the schema (however often it is re-asked), the strong model answers both well; the
strong tier costs ten times the fast one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from ai_pipelines.cli import main
from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import Settings
from assets.components.llm_asset import LlmCall
from assets.components.llm_step import LlmStep, StepDefinitionError
from resources import ModelResource
from resources.gateway.tier_routing import RoutingPolicy, TierOutcomes, TierRouter, wilson_bounds
from resources.tables import WAREHOUSE
from tests.conftest import gateway, materialization_metadata, warehouse_rows
from tests.fake_openai import FakeOpenAI, data_block
from tests.routed_questions import ANSWER, FAST, PROMPT, ROUTING, STRONG, routed_step, script
from tests.routed_questions import questions as numbered_questions

pytestmark = pytest.mark.integration  # Dagster runs against the fake server

ITEMS = 80  # half easy, half hard, interleaved
# The step with its routing and a check on what it writes.
CHECKED = ROUTING + "\n  checks:\n    - kind: schema_validity\n      min_rate: 0.9"


def priced_model(llm: FakeOpenAI, state: Path, cache: Path, **options: Any) -> ModelResource:
    return gateway(
        llm,
        fast_model=FAST,
        strong_model=STRONG,
        input_price_per_mtok=1.0,
        output_price_per_mtok=1.0,
        strong_input_price_per_mtok=10.0,
        strong_output_price_per_mtok=10.0,
        state_path=str(state),
        cache_path=str(cache),
        **options,
    )


def questions(count: int = ITEMS) -> list[dict[str, str]]:
    return numbered_questions(count)


def materialize(step: LlmStep, settings: Settings, model: ModelResource, items: list[dict[str, str]]):
    @dg.asset(name="questions", io_manager_key=WAREHOUSE)
    def questions_table() -> pd.DataFrame:
        return pd.DataFrame(items)

    result = dg.materialize(
        [questions_table, step.build_asset(), *(step.build_check(c) for c in step.checks)],
        resources={"model": model, WAREHOUSE: build_resources(settings)[WAREHOUSE]},
    )
    return result, materialization_metadata(result, "routed_labels")


def asked(llm: FakeOpenAI, model: str, kind: str) -> set[str]:
    """The questions of `kind` the server was asked by `model`."""
    return {
        data_block(c["messages"], "question") or ""
        for c in llm.calls
        if c["schema"] == ANSWER and c["model"] == model and f"{kind} question" in c["messages"][0]["content"]
    }


def why(decisions: dict[str, Any], kind: str, tier: str) -> dict[str, int]:
    return decisions.get(kind, {}).get(tier, {})


def test_the_router_learns_easy_items_go_fast_and_hard_ones_strong(settings: Settings, llm: FakeOpenAI, tmp_path):
    script(llm)
    step = routed_step(tmp_path / "routed_labels", CHECKED)
    state = tmp_path / "state.sqlite"
    model = priced_model(llm, state, tmp_path / "cache.sqlite", max_concurrency=2)

    result, first = materialize(step, settings, model, questions())

    assert result.success
    rows = warehouse_rows(settings, "routed_labels")
    assert len(rows) == ITEMS and sum(r["status"] == "valid" for r in rows) / ITEMS >= 0.9
    decisions = first["routing_decisions"]
    # Hard items: the fast tier's warm-up (its failures asked again on strong), then the strong tier.
    hard_fast = sum(why(decisions, "hard", "fast").values())
    assert 8 <= why(decisions, "hard", "fast").get("warm-up", 0) <= 8 + 2  # two in flight when the eighth fails
    assert why(decisions, "hard", "strong").get("below target", 0) >= ITEMS // 2 - hard_fast - 8
    assert first["routing_retried_on_strong"] == hard_fast
    # Easy items stay on the fast tier: only explores go to strong, and the rate is proven within the run.
    assert set(why(decisions, "easy", "strong")) <= {"explore"}
    assert why(decisions, "easy", "fast").get("meets target", 0) >= 1
    rates = first["routing_pass_rates"]
    assert rates["easy"]["fast"]["rate"] == 1.0 and rates["easy"]["fast"]["lower_bound"] >= 0.9
    assert rates["hard"]["fast"]["rate"] == 0.0 and rates["hard"]["strong"]["rate"] == 1.0
    # The server saw it: late hard questions only on the strong model, no easy one on strong but explores.
    assert len(asked(llm, FAST, "hard")) == hard_fast
    assert len(asked(llm, STRONG, "easy")) == sum(why(decisions, "easy", "strong").values())
    assert first["routing_cost_usd"] < first["routing_cost_if_all_strong_usd"]
    assert first["routing_savings_usd"] == pytest.approx(
        first["routing_cost_if_all_strong_usd"] - first["routing_cost_usd"], abs=1e-6
    )
    [validity] = result.get_asset_check_evaluations()
    assert validity.passed

    # A later run, its answers not cached, starts from what the store holds: no second warm-up.
    llm.reset()
    script(llm)
    again = priced_model(llm, state, tmp_path / "another_cache.sqlite", max_concurrency=2)
    _, second = materialize(step, settings, again, questions())
    decisions = second["routing_decisions"]
    assert set(why(decisions, "easy", "fast")) <= {"meets target", "explore"}
    assert set(why(decisions, "hard", "strong")) <= {"below target", "explore"}
    assert set(why(decisions, "hard", "fast")) <= {"explore"}
    assert set(why(decisions, "easy", "strong")) <= {"explore"}
    assert len(asked(llm, FAST, "hard")) == sum(why(decisions, "hard", "fast").values())
    assert second["routing_cost_usd"] < second["routing_cost_if_all_strong_usd"]
    # The outcomes are in the state store, kept per step, request type and tier.
    stored = {(r.request_type, r.tier): r for r in TierOutcomes(state).rates()}
    assert stored[("easy", "fast")].n == rates["easy"]["fast"]["n"] + sum(why(decisions, "easy", "fast").values())


def test_a_pinned_tier_wins_and_the_cli_lists_and_clears_it(
    settings: Settings, llm: FakeOpenAI, tmp_path, monkeypatch, capsys
):
    script(llm)
    step = routed_step(tmp_path / "routed_labels", CHECKED)
    monkeypatch.setenv("AI_PIPELINES_DATA_DIR", str(settings.data_dir))
    state = Path(settings.gateway_state_location)
    model = priced_model(llm, state, tmp_path / "cache.sqlite")

    assert main(["routes", "--pin", "routed_labels", "strong"]) == 0
    _, pinned = materialize(step, settings, model, questions(12))

    assert pinned["routing_pinned"] == "strong"
    assert pinned["routing_decisions"]["easy"] == {"strong": {"pinned": 6}, "latest": "pinned to strong"}
    assert asked(llm, FAST, "easy") == set() and asked(llm, FAST, "hard") == set()
    assert pinned["routing_cost_usd"] == pinned["routing_cost_if_all_strong_usd"] > 0

    capsys.readouterr()
    assert main(["routes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["pins"] == {"routed_labels": "strong"}
    assert {(r["request_type"], r["tier"], r["n"]) for r in listed["pass_rates"]} == {
        ("easy", "strong", 6),
        ("hard", "strong", 6),
    }
    assert main(["routes"]) == 0
    assert "| routed_labels | easy | strong | 6 | 6 | 1.0 |" in capsys.readouterr().out

    assert main(["routes", "--unpin", "routed_labels"]) == 0
    llm.reset()
    script(llm)
    _, unpinned = materialize(step, settings, priced_model(llm, state, tmp_path / "cache2.sqlite"), questions(12))
    assert unpinned["routing_pinned"] == "" and "warm-up" in unpinned["routing_decisions"]["easy"]["fast"]


def test_explore_sends_a_share_of_items_to_the_other_tier():
    """With the fast tier proven, every item would go to fast: a deterministic tenth goes to
    strong; with it failing, a tenth goes to fast, where its rate keeps being measured."""
    config = ModelResource(input_price_per_mtok=1.0, strong_input_price_per_mtok=10.0)

    def router(run_id: str) -> TierRouter:
        routing = TierRouter(policy=RoutingPolicy(explore=0.1), step="labels", basis="v1", config=config, run_id=run_id)
        for _ in range(40):
            routing.record("easy", "fast", True, 0.001)
            routing.record("hard", "fast", False, 0.001)
        return routing

    first, second = router("run-1"), router("run-2")
    keys = [f"item-{i}" for i in range(1000)]
    easy = [first.choose("easy", key) for key in keys]
    explored = {key for key, choice in zip(keys, easy) if choice.why == "explore"}
    assert 70 <= len(explored) <= 130
    assert {c.tier for c in easy if c.why == "explore"} == {"strong"}
    assert {c.why for c in easy if c.why != "explore"} == {"meets target"}
    hard = [first.choose("hard", key) for key in keys]
    assert {(c.tier, c.why) for c in hard} == {("strong", "below target"), ("fast", "explore")}
    assert [first.choose("easy", key) for key in keys] == easy  # one run decides alike every time
    assert {k for k in keys if second.choose("easy", k).why == "explore"} != explored  # another run, other items
    never = TierRouter(policy=RoutingPolicy(explore=0.0), step="labels", basis="v1", config=config)
    never.tallies = first.tallies
    assert all(never.choose("easy", key).tier == "fast" for key in keys)


def test_bounds_and_bad_routing_are_named_where_they_are_written(tmp_path):
    assert wilson_bounds(0, 0, 0.95) == (0.0, 1.0)
    lower, upper = wilson_bounds(24, 24, 0.95)
    assert lower < 0.9 < upper and wilson_bounds(25, 25, 0.95)[0] >= 0.9
    assert wilson_bounds(0, 8, 0.95)[1] < 0.3
    bad = CHECKED.replace("explore: 0.1", "explore: 0.9")
    with pytest.raises(StepDefinitionError, match=r"defs.yaml:\d+: attributes.routing.explore: 0.9 is not a share"):
        routed_step(tmp_path / "bad", bad)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(PROMPT)
    with pytest.raises(ValueError, match="routing.target: 1.5 is not a share"):
        LlmCall(prompt_file=prompt, answer=RoutingPolicy, routing=RoutingPolicy(target=1.5))


@pytest.mark.services
def test_outcomes_and_pins_are_shared_through_postgres(postgres_url: str):
    """Two processes' stores on one Postgres database: what one records, the other's router starts from."""
    config = ModelResource(state_path=postgres_url, input_price_per_mtok=1.0, strong_input_price_per_mtok=10.0)
    writer = TierRouter.open(RoutingPolicy(explore=0.0), "labels", "v1", config)
    for index in range(30):
        writer.record("easy", "fast", True, 0.001)
        writer.record("hard", "fast", index == 0, 0.002)

    reader = TierRouter.open(RoutingPolicy(explore=0.0), "labels", "v1", config)
    assert reader.tally("easy", "fast").n == 30 and reader.tally("hard", "fast").passed == 1
    assert reader.choose("easy", "a").why == "meets target" and reader.choose("hard", "a").tier == "strong"
    assert TierRouter.open(RoutingPolicy(explore=0.0), "labels", "v2", config).choose("easy", "a").why == "warm-up"
    outcomes = TierOutcomes(postgres_url)
    [easy, hard] = outcomes.rates()
    assert (easy.request_type, easy.n, easy.rate, hard.passed) == ("easy", 30, 1.0, 1)
    outcomes.pin("labels", "fast")
    assert TierRouter.open(RoutingPolicy(), "labels", "v1", config).choose("hard", "a").reason == "pinned to fast"
    assert outcomes.unpin("labels") and outcomes.pins() == {}
