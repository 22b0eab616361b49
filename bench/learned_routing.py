"""Benchmark scenario: what routing that learns from a step's checks costs and keeps, against
sending every item to one tier.

One YAML step (its `defs.yaml` written to a temporary folder) is materialized by Dagster over
the same items, half easy and half hard, four ways: every item on the fast tier, every item on
the strong tier, and with `routing:` twice: a first run that starts with nothing measured (its
warm-up included) and a second that starts from the rates the first left in the state store
(its response cache empty, so every item is asked again). The fake server is scripted per
model: the fast model answers easy items well and hard ones outside the schema, the strong
model answers both; the strong tier costs ten times the fast one. Cost is the materialization's
`cost_usd` (every call, re-asks and retries included); the pass rate is the share of rows whose
answer met the schema.

A learned run whose pass rate is under the step's target, or that costs as much as sending
everything to the strong tier, fails the scenario: that is the claim it measures.

    .venv/bin/python -m bench.learned_routing [items, default 200]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/ and tests/ are packages of the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg
import pandas as pd

from ai_pipelines.definitions import build_resources
from bench.bench_settings import bench_settings
from bench.table import BenchmarkFailed, Row, print_rows
from resources import ModelResource
from resources.tables import WAREHOUSE
from tests.fake_openai import FakeOpenAI
from tests.routed_questions import ASSET, FAST, ROUTING, STRONG, questions, routed_step, script

SCENARIO = "routing"
TARGET = 0.9
PRICES = dict(
    input_price_per_mtok=0.25,
    output_price_per_mtok=1.0,
    strong_input_price_per_mtok=2.5,
    strong_output_price_per_mtok=10.0,
)


def materialize(folder: Path, how: str, items: list[dict[str, str]], server: FakeOpenAI, state: Path, cache: Path):
    """The step declared with `how` (its tier or its routing), materialized over `items`: its metadata."""
    step = routed_step(folder, how)

    @dg.asset(name="questions", io_manager_key=WAREHOUSE)
    def questions_table() -> pd.DataFrame:
        return pd.DataFrame(items)

    settings = bench_settings(folder, server.base_url, concurrency=4)
    model = ModelResource(
        base_url=server.base_url,
        fast_model=FAST,
        strong_model=STRONG,
        max_concurrency=4,
        state_path=str(state),
        cache_path=str(cache),
        **PRICES,
    )
    result = dg.materialize(
        [questions_table, step.build_asset()],
        resources={"model": model, WAREHOUSE: build_resources(settings)[WAREHOUSE]},
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},  # the table, not the events
    )
    if not result.success:
        raise BenchmarkFailed(f"the {how.strip()!r} run over {len(items)} items failed")
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(ASSET))
    return {k: v.value for k, v in event.materialization.metadata.items()}


def measure(count: int = 200) -> list[Row]:
    items = questions(count)
    ways = {
        "all fast": "  tier: fast",
        "all strong": "  tier: strong",
        "learned, first run": ROUTING,
        "learned, second run": ROUTING,
    }
    measured: dict[str, dict[str, Any]] = {}
    with FakeOpenAI() as server, tempfile.TemporaryDirectory(prefix="bench-routing-") as root:
        script(server)
        for index, (way, how) in enumerate(ways.items()):
            # One state store for the learned runs; a fresh response cache for every run.
            state = Path(root) / ("learned_state.sqlite" if way.startswith("learned") else f"state_{index}.sqlite")
            measured[way] = materialize(
                Path(root) / f"run_{index}", how, items, server, state, Path(root) / f"cache_{index}.sqlite"
            )
    strong = measured["all strong"]
    rows = []
    for way, figures in measured.items():
        cost, rate = figures["cost_usd"], figures["validity_rate"]
        row = Row(
            scenario=SCENARIO,
            measure=f"{way}, {count} items (half hard)",
            value=f"${cost:.4f}, pass rate {rate:.2f}",
            baseline=f"all strong ${strong['cost_usd']:.4f}, pass rate {strong['validity_rate']:.2f}",
            ratio=cost / strong["cost_usd"] if strong["cost_usd"] else None,
        )
        if way.startswith("learned"):
            decisions = figures["routing_decisions"]
            on_fast = sum(sum(d.get("fast", {}).values()) for d in decisions.values())
            row = row.model_copy(
                update={
                    "value": f"{row.value}; {on_fast} items asked on fast, "
                    f"{figures['routing_retried_on_strong']} retried on strong",
                    "target": f"cost < all strong, pass rate >= {TARGET}",
                    "met": cost < strong["cost_usd"] and rate >= TARGET,
                }
            )
            if not row.met:
                raise BenchmarkFailed(f"{way}: {row.value} against {row.baseline} (target {row.target})")
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(print_rows(lambda: measure(int(sys.argv[1]) if len(sys.argv) > 1 else 200)))
