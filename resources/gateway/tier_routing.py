"""Routing that learns from a step's own checks: per item, the cheapest tier that has shown
it passes this step often enough, measured rather than assumed.

A step that allows it says what share of its items must pass its per-item gate (`target`).
Every answer's outcome (passed or not, and what it cost) is kept per step, request type and
tier in the gateway's state store, shared by every run and process, so what one run learns
the next one uses. An item goes to the cheap tier while the cheap tier is unmeasured or its
measured pass rate could still meet the target, and to the other tier once the rate's
confidence interval lies below it; a cheap answer that fails is asked again on the other
tier before the row is written, so learning costs money but not quality. A small share of
items (`explore`) goes to the tier the rule would not choose, so a rate keeps being measured
after the rule stops asking that tier. A person can pin a step to a tier (`ai-pipelines
routes --pin`), which wins over everything.

The rates are the Wilson score interval's bounds, which stay honest on the few samples a
warm-up has. Outcomes are kept under a basis (the step's code version and the tiers' models):
a new prompt, schema or model starts measuring afresh, since the old rates describe something
that no longer runs.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from statistics import NormalDist
from typing import get_args

from pydantic import BaseModel, Field

from resources.gateway.config import GatewayConfig, Tier
from resources.secrets import reveal
from resources.storage.state_store import StateStore, upsert_sql

TIER_NAMES: tuple[str, ...] = get_args(Tier)
ALL_ITEMS = "all"  # the request type of every item of a step routed as one type
# A nominal request, to compare the tiers' prices whatever the step's own sizes.
_NOMINAL_TOKENS = (1_000, 1_000)

SCHEMA = """
create table if not exists tier_tallies (
    step text not null,
    basis text not null,
    request_type text not null,
    tier text not null,
    n integer not null,
    passed integer not null,
    cost_usd real not null,
    updated_at text not null,
    primary key (step, basis, request_type, tier)
);
create table if not exists tier_pins (step text primary key, tier text not null, pinned_at text not null);
"""


class RoutingPolicy(BaseModel):
    """How a step chooses a tier per item (the YAML attribute `routing:`, `LlmCall(routing=...)`).

    Bounds are checked by `problems()`, not as pydantic constraints, so that a step's YAML can
    name the line of a bad value."""

    target: float = Field(default=0.9, description="The share of items that must pass the step's per-item gate.")
    explore: float = Field(
        default=0.1, description="The share of items sent to the tier the rule did not choose, to keep measuring it."
    )
    warm_up: int = Field(
        default=8, description="Outcomes per request type and tier before that tier's measured rate is used."
    )
    confidence: float = Field(default=0.95, description="The confidence of the pass rate's bounds (one-sided).")
    route_by: str = Field(
        default="", description="The item column naming each item's request type; empty = the step is one type."
    )

    def problems(self) -> list[tuple[str, str]]:
        """(field, problem) for each value out of its bounds."""
        found = []
        if not 0 < self.target <= 1:
            found.append(("target", f"{self.target} is not a share above 0 and at most 1"))
        if not 0 <= self.explore <= 0.5:
            found.append(("explore", f"{self.explore} is not a share between 0 and 0.5"))
        if self.warm_up < 1:
            found.append(("warm_up", f"{self.warm_up} is not at least 1"))
        if not 0.5 <= self.confidence < 1:
            found.append(("confidence", f"{self.confidence} is not between 0.5 and 1 (exclusive)"))
        return found

    def request_type(self, item: dict[str, object]) -> str:
        if not self.route_by:
            return ALL_ITEMS
        return str(item.get(self.route_by) or "") or ALL_ITEMS


def wilson_bounds(passed: int, n: int, confidence: float) -> tuple[float, float]:
    """The one-sided Wilson score bounds of a pass rate: (lower, upper); (0, 1) with no samples."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(confidence)
    rate = passed / n
    centre = rate + z * z / (2 * n)
    spread = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


@dataclass
class Tally:
    """Outcomes of one tier for one request type: how many, how many passed, what they cost."""

    n: int = 0
    passed: int = 0
    cost_usd: float = 0.0

    def add(self, passed: bool, cost_usd: float) -> None:
        self.n += 1
        self.passed += int(passed)
        self.cost_usd += cost_usd

    @property
    def rate(self) -> float:
        return self.passed / self.n if self.n else 0.0


class MeasuredRate(BaseModel):
    """A tier's measured pass rate on a step and request type, as a person reads it."""

    step: str
    request_type: str
    tier: str
    n: int
    passed: int
    rate: float
    lower_bound: float
    mean_cost_usd: float


class TierOutcomes:
    """The outcomes and pins of every routed step, in the gateway's state store."""

    def __init__(self, location: str | Path) -> None:
        # Outcomes are evidence, not decisions: losing the last few to a power cut costs a few samples.
        self._db = StateStore(location, SCHEMA, durable=False)

    def record(self, step: str, basis: str, request_type: str, tier: str, passed: bool, cost_usd: float) -> None:
        """One more outcome, added to its tally: a row per (step, basis, type, tier), not per
        answer, so the store stays small however many items a step routes."""
        self._db.execute(
            "insert into tier_tallies (step, basis, request_type, tier, n, passed, cost_usd, updated_at) "
            "values (?, ?, ?, ?, 1, ?, ?, ?) on conflict (step, basis, request_type, tier) do update set "
            "n = tier_tallies.n + 1, passed = tier_tallies.passed + excluded.passed, "
            "cost_usd = tier_tallies.cost_usd + excluded.cost_usd, updated_at = excluded.updated_at",
            (step, basis, request_type, tier, int(passed), cost_usd, datetime.now(timezone.utc).isoformat()),
        )

    def tallies(self, step: str, basis: str) -> dict[tuple[str, str], Tally]:
        """(request type, tier) -> what was measured for this step under this basis."""
        rows = self._db.fetchall(
            "select request_type, tier, n, passed, cost_usd from tier_tallies where step = ? and basis = ?",
            (step, basis),
        )
        return {(t, tier): Tally(int(n), int(p), float(c)) for t, tier, n, p, c in rows}

    def rates(self, confidence: float = 0.95) -> list[MeasuredRate]:
        """Every step's rates under its newest basis (older bases describe what no longer runs)."""
        newest = dict(
            self._db.fetchall(
                "select step, basis from tier_tallies o where updated_at = "
                "(select max(updated_at) from tier_tallies where step = o.step)"
            )
        )
        rows = self._db.fetchall(
            "select step, basis, request_type, tier, n, passed, cost_usd from tier_tallies "
            "order by step, request_type, tier"
        )
        return [
            MeasuredRate(
                step=step,
                request_type=kind,
                tier=tier,
                n=int(n),
                passed=int(p),
                rate=round(int(p) / int(n), 3),
                lower_bound=round(wilson_bounds(int(p), int(n), confidence)[0], 3),
                mean_cost_usd=round(float(c) / int(n), 8),
            )
            for step, basis, kind, tier, n, p, c in rows
            if newest.get(step) == basis
        ]

    def pin(self, step: str, tier: str) -> None:
        if tier not in TIER_NAMES:
            raise ValueError(f"unknown tier {tier!r} (known: {', '.join(TIER_NAMES)})")
        self._db.execute(
            upsert_sql("tier_pins", ["step", "tier", "pinned_at"], "step"),
            (step, tier, datetime.now(timezone.utc).isoformat()),
        )

    def unpin(self, step: str) -> bool:
        """Whether the step was pinned."""
        pinned = self.pinned(step) is not None
        self._db.execute("delete from tier_pins where step = ?", (step,))
        return pinned

    def pinned(self, step: str) -> str | None:
        row = self._db.fetchone("select tier from tier_pins where step = ?", (step,))
        return row[0] if row else None

    def pins(self) -> dict[str, str]:
        return dict(self._db.fetchall("select step, tier from tier_pins order by step"))


@dataclass(frozen=True)
class TierChoice:
    """Which tier one item is asked on, and why, in words a person reads in the metadata."""

    tier: Tier
    why: str  # pinned, warm-up, measuring, meets target, below target, explore
    reason: str  # the why with its figures, e.g. "fast meets target (lcb 0.93 >= 0.90)"


def cheap_and_strong(config: GatewayConfig) -> tuple[Tier, Tier]:
    """The cheaper tier at the configured prices, and the other one; equal prices: fast first."""
    fast, strong = (config.cost(t, *_NOMINAL_TOKENS) for t in ("fast", "strong"))
    return ("strong", "fast") if strong < fast else ("fast", "strong")


@dataclass
class TierRouter:
    """One computation's routing of one step: the outcomes measured so far (stored and this
    run's), the decisions made and what they cost. Thread-safe: items are asked concurrently."""

    policy: RoutingPolicy
    step: str
    basis: str
    config: GatewayConfig
    run_id: str = ""
    store: TierOutcomes | None = None
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    pinned: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, policy: RoutingPolicy, step: str, basis: str, config: GatewayConfig, run_id: str = "") -> TierRouter:
        """The router of a step, with what the state store (when configured) has measured and pinned."""
        store = TierOutcomes(reveal(config.state_path)) if config.state_path else None
        tallies = store.tallies(step, basis) if store else {}
        pinned = store.pinned(step) if store else None
        return cls(policy, step, basis, config, run_id, store, tallies, pinned)

    @property
    def tiers(self) -> tuple[Tier, Tier]:
        return cheap_and_strong(self.config)

    def tally(self, request_type: str, tier: str) -> Tally:
        with self._lock:
            found = self.tallies.get((request_type, tier), Tally())
            return Tally(found.n, found.passed, found.cost_usd)

    def bounds(self, request_type: str, tier: str) -> tuple[float, float]:
        measured = self.tally(request_type, tier)
        return wilson_bounds(measured.passed, measured.n, self.policy.confidence)

    def choose(self, request_type: str, item_key: str) -> TierChoice:
        if self.pinned in TIER_NAMES:
            return TierChoice(self.pinned, "pinned", f"pinned to {self.pinned}")  # type: ignore[arg-type]
        cheap, strong = self.tiers
        chosen = self._rule(request_type, cheap, strong)
        if self._explores(request_type, item_key):
            other = strong if chosen.tier == cheap else cheap
            return TierChoice(other, "explore", f"explore {other} (the rule chose {chosen.reason})")
        return chosen

    def _rule(self, request_type: str, cheap: Tier, strong: Tier) -> TierChoice:
        measured = self.tally(request_type, cheap)
        target = self.policy.target
        if measured.n < self.policy.warm_up:
            return TierChoice(cheap, "warm-up", f"warm-up of {cheap} ({measured.n} of {self.policy.warm_up})")
        lower, upper = self.bounds(request_type, cheap)
        if lower >= target:
            return TierChoice(cheap, "meets target", f"{cheap} meets target (lcb {lower:.2f} >= {target:.2f})")
        if upper < target:
            return TierChoice(strong, "below target", f"{cheap} below target (ucb {upper:.2f} < {target:.2f})")
        # Undecided: a failed cheap answer is asked again on the strong tier, so asking the cheap
        # tier costs one cheap call per failure and no quality, and it decides the rate sooner.
        return TierChoice(cheap, "measuring", f"measuring {cheap} (lcb {lower:.2f} < {target:.2f} <= ucb {upper:.2f})")

    def _explores(self, request_type: str, item_key: str) -> bool:
        """A deterministic share `explore` of items: the same item in the same run always alike."""
        if self.policy.explore <= 0:
            return False
        digest = hashlib.sha256(f"{self.step}\0{request_type}\0{item_key}\0{self.run_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.policy.explore

    def record(self, request_type: str, tier: str, passed: bool, cost_usd: float) -> None:
        """One answer's outcome, for this run's later items and for every later run."""
        with self._lock:
            self.tallies.setdefault((request_type, tier), Tally()).add(passed, cost_usd)
        if self.store is not None:
            self.store.record(self.step, self.basis, request_type, tier, passed, cost_usd)

    def measured(self) -> Iterator[tuple[str, str, Tally]]:
        with self._lock:
            items = sorted(self.tallies.items())
        for (request_type, tier), tally in items:
            yield request_type, tier, tally
