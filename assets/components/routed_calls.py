"""A declared call asked per item on the tier its step's router chooses (resources/gateway/tier_routing.py).

Whether an answer passed is the step's own per-item gate: the answer validated against the
output schema and the step's rules, i.e. its row would be `valid`. An answer from the cheap
tier that fails is asked again on the strong tier before the row is written, so the checks
that read the rows see the strong answer; both outcomes are recorded, since the failure is
what teaches the router. An outage (no endpoint answered) says nothing about a tier's
quality and is not recorded; nor is an answer served from the response cache, which is an
outcome already counted.

What a person judges the routing by goes in the materialization's metadata: how many items
went where and why, the measured pass rates, and what the items cost against what they would
have cost on the strong tier alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.components.llm_asset import LlmRun
from resources import ModelCallError, ModelSession, Tier
from resources.gateway.tier_routing import RoutingPolicy, TierChoice, TierRouter, wilson_bounds

# One item asked on one tier through a session: (the answer, or the ModelCallError, and its trace id).
Ask = Callable[[int, Tier, ModelSession], tuple[Any, str]]


@dataclass(frozen=True)
class RoutedItem:
    key: str  # names the item (which items explore is decided by it)
    request_type: str
    partition: str = ""


@dataclass(frozen=True)
class RoutedAnswer:
    """How one item was answered: the router's choice, the tier whose answer was used ("" for
    none), whether it was asked again on the strong tier, and what its calls cost."""

    item: RoutedItem
    choice: TierChoice
    answered_by: str
    retried: bool
    cost_usd: float
    cost_if_all_strong_usd: float


@dataclass
class RoutingLog:
    """One computation's routed items, and the router that chose their tiers."""

    router: TierRouter
    answers: list[RoutedAnswer]

    def metadata(self, partition: str | None = None) -> dict[str, object]:
        """The routing figures of every item, or of one partition's items (the pass rates and the
        pin are the step's, shown alike on every partition)."""
        mine = [a for a in self.answers if partition is None or a.item.partition == partition]
        decisions: dict[str, dict[str, Any]] = {}
        for answer in mine:
            per_type = decisions.setdefault(answer.item.request_type, {})
            per_tier = per_type.setdefault(answer.choice.tier, Counter())
            per_tier[answer.choice.why] += 1
            per_type["latest"] = answer.choice.reason
        rates: dict[str, dict[str, dict[str, float]]] = {}
        for request_type, tier, tally in self.router.measured():
            lower, _ = wilson_bounds(tally.passed, tally.n, self.router.policy.confidence)
            rates.setdefault(request_type, {})[tier] = {
                "n": tally.n,
                "rate": round(tally.rate, 3),
                "lower_bound": round(lower, 3),
            }
        cost = sum(a.cost_usd for a in mine)
        all_strong = sum(a.cost_if_all_strong_usd for a in mine)
        return {
            "routing_target": self.router.policy.target,
            "routing_decisions": dg.MetadataValue.json(
                {t: {k: dict(v) if isinstance(v, Counter) else v for k, v in d.items()} for t, d in decisions.items()}
            ),
            "routing_pass_rates": dg.MetadataValue.json(rates),
            "routing_retried_on_strong": sum(a.retried for a in mine),
            "routing_cost_usd": round(cost, 6),
            "routing_cost_if_all_strong_usd": round(all_strong, 6),
            "routing_savings_usd": round(all_strong - cost, 6),
            "routing_pinned": self.router.pinned or "",
        }


def step_basis(run: LlmRun, step: str) -> str:
    """What the measured rates hold for: the asset's code version (prompt, schema, rules) and the tiers' models."""
    config = run.llm.config
    versions = run.context.assets_def.code_versions_by_key if run.context.has_assets_def else {}
    version = versions.get(dg.AssetKey.from_user_string(step)) or run.call.prompt.version
    return f"{version}|fast={config.model_for('fast')}|strong={config.model_for('strong')}"


def ask_routed(
    run: LlmRun,
    policy: RoutingPolicy,
    items: Sequence[RoutedItem],
    ask: Ask,
    on_done: Callable[[], None] | None = None,
) -> tuple[list[tuple[Any, str]], RoutingLog]:
    """Each item asked on its chosen tier at the gateway's concurrency; the answers in item
    order, and the log of how each was routed."""
    step = run.llm.ledger.asset
    router = TierRouter.open(policy, step, step_basis(run, step), run.llm.config, run_id=run.context.run_id)
    cheap, strong = router.tiers
    config = run.llm.config

    def asked(index: int, tier: Tier) -> tuple[Any, str, float, float, bool]:
        """The answer on `tier`, its cost, that cost repriced on the strong tier, and whether it
        is a quality outcome to record."""
        llm = run.llm.branch()
        answer, trace_id = ask(index, tier, llm)
        calls = [r for r in llm.ledger.records if r.sent and not r.cache_hit]
        cost = sum(r.cost_usd for r in calls)
        repriced = sum(config.cost(strong, r.prompt_tokens, r.completion_tokens) for r in calls)
        outcome = bool(calls) and (not isinstance(answer, ModelCallError) or answer.invalid_output)
        return answer, trace_id, cost, repriced, outcome

    def one(index: int) -> tuple[tuple[Any, str], RoutedAnswer]:
        item = items[index]
        try:
            choice = router.choose(item.request_type, item.key)
            answer, trace_id, cost, repriced, outcome = asked(index, choice.tier)
            if outcome:
                router.record(item.request_type, choice.tier, not isinstance(answer, Exception), cost)
            all_strong = cost if choice.tier == strong else repriced
            retry = (
                choice.why != "pinned"
                and choice.tier == cheap
                and isinstance(answer, ModelCallError)
                and answer.invalid_output
            )
            if retry:
                answer, trace_id, again, _, outcome = asked(index, strong)
                if outcome:
                    router.record(item.request_type, strong, not isinstance(answer, Exception), again)
                cost, all_strong = cost + again, again
            used = "" if isinstance(answer, Exception) else (strong if retry else choice.tier)
            return (answer, trace_id), RoutedAnswer(item, choice, used, retry, cost, all_strong)
        finally:
            if on_done is not None:
                on_done()

    with ThreadPoolExecutor(max_workers=max(1, run.model.max_concurrency)) as pool:
        done = list(pool.map(one, range(len(items))))
    return [answer for answer, _ in done], RoutingLog(router, [routed for _, routed in done])
