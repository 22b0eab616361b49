"""Routing tiers measured before they are trusted: each one routes a labelled sample first.

A classifier that routes 37 of 40 tickets to its first label is confident and wrong, and
three samples of it agree with each other. So no routing tier is believed on its word:
the semantic router and every model voter route a labelled sample (the desk's labelled
tickets and a public intent set mapped to the desk's intents), the share they route right
is recorded, and a tier under the floor (`TriageConfig.min_route_accuracy`) decides
nothing. The same answers tell which voters fail together: two voters that give the same
wrong label on the same items are one opinion, however many prompts they are asked with.

The sample is the bundled one, whatever tickets a run routes, like a judge's calibration
examples. Abusive tickets are left out: abuse is screening's decision, not a route. The
routing examples never come from the desk's tickets, so the desk's labels measure the
router rather than echo it. Model tiers are measured on a small stratified subset (a few
items per intent from each source) so that the first run with a new model pays a couple
of dozen calls, not hundreds; a measurement is keyed by what it depends on (the model or
embedder, the prompt and label order, the sample), kept in the asset's own history, and
reused while the key holds.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Literal, Sequence

from pydantic import BaseModel, Field

from resources.pipeline_config import SUPPORT_DESK_DIR
from resources.support.semantic_router import RoutingExample

ROUTING_EXAMPLES = SUPPORT_DESK_DIR / "routing_examples.jsonl"
PUBLIC_INTENTS = SUPPORT_DESK_DIR / "public_intents" / "banking77_subset.jsonl"
DESK_LABELS = SUPPORT_DESK_DIR / "ticket_labels.csv"
DESK_TICKETS = SUPPORT_DESK_DIR / "tickets"
# Items per intent and source in a model tier's measurement: 2 desk tickets x 5 intents and
# 3 public requests x 4 intents, 22 calls per voter.
MODEL_SAMPLE = {"desk": 2, "public": 3}
# Two voters whose errors coincide (same item, same wrong label) this often fail together.
MAX_SHARED_FAILURES = 0.5
NOT_ROUTED = ""


class LabelledRequest(BaseModel):
    """One request a person labelled with the desk intent that should handle it."""

    key: str = Field(description="desk:<ticket id> or public:<line>.")
    title: str = ""
    text: str
    intent: str
    source: Literal["desk", "public"]


class TierAccuracy(BaseModel):
    """What one routing tier scored on the labelled sample."""

    tier: str
    key: str = Field(description="Hash of what the measurement depends on; a new key re-measures.")
    answers: dict[str, str] = Field(description="The tier's route per labelled item ('' = not routed, or failed).")
    desk: float | None = Field(default=None, description="Share of the routed desk items routed right.")
    public: float | None = Field(default=None, description="Share of the routed public items routed right.")
    accuracy: float = Field(description="Share of all routed items routed right (the figure the floor applies to).")
    routed: int = Field(description="Items the tier routed (a margin or a failure can leave some unrouted).")
    items: int


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
    return rows


def routing_examples() -> list[RoutingExample]:
    """The router's examples: those written for the desk, and the public set's example split."""
    own = [RoutingExample(**row, source=ROUTING_EXAMPLES.name) for row in _jsonl(ROUTING_EXAMPLES)]
    public = [
        RoutingExample(text=row["text"], intent=row["intent"], source=f"banking77:{row['category']}")
        for row in _jsonl(PUBLIC_INTENTS)
        if row["split"] == "example"
    ]
    return own + public


def desk_labels() -> dict[str, str]:
    """The desk's expected intent per ticket id."""
    with DESK_LABELS.open(encoding="utf-8", newline="") as handle:
        return {row["ticket_id"]: row["intent"] for row in csv.DictReader(handle)}


def labelled_sample() -> list[LabelledRequest]:
    """Every labelled item a tier is measured on: the desk's tickets (not the abusive) and the public eval split."""
    items = []
    for ticket_id, intent in sorted(desk_labels().items()):
        if intent == "abusive":
            continue
        ticket = json.loads((DESK_TICKETS / f"{ticket_id}.json").read_text(encoding="utf-8"))
        items.append(
            LabelledRequest(
                key=f"desk:{ticket_id}", title=ticket["subject"], text=ticket["body"], intent=intent, source="desk"
            )
        )
    for number, row in enumerate(_jsonl(PUBLIC_INTENTS), 1):
        if row["split"] == "eval":
            items.append(
                LabelledRequest(key=f"public:{number}", text=row["text"], intent=row["intent"], source="public")
            )
    return items


def model_sample(items: Sequence[LabelledRequest]) -> list[LabelledRequest]:
    """The stratified subset a model tier is measured on: the first few items per intent and source."""
    taken: dict[tuple[str, str], int] = defaultdict(int)
    chosen = []
    for item in items:
        if taken[(item.source, item.intent)] < MODEL_SAMPLE[item.source]:
            taken[(item.source, item.intent)] += 1
            chosen.append(item)
    return chosen


def measurement_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sample_hash(items: Sequence[LabelledRequest]) -> str:
    return measurement_key([item.model_dump() for item in items])


def score(tier: str, key: str, items: Sequence[LabelledRequest], answers: dict[str, str]) -> TierAccuracy:
    """A tier's accuracy from its answers; an item it did not route counts in `items`, not against it."""

    def share(source: str | None) -> float | None:
        routed = [i for i in items if answers.get(i.key) and (source is None or i.source == source)]
        return round(sum(answers[i.key] == i.intent for i in routed) / len(routed), 3) if routed else None

    routed = sum(bool(answers.get(i.key)) for i in items)
    return TierAccuracy(
        tier=tier,
        key=key,
        answers=answers,
        desk=share("desk"),
        public=share("public"),
        accuracy=share(None) or 0.0,
        routed=routed,
        items=len(items),
    )


def measure(
    tier: str, key: str, items: Sequence[LabelledRequest], route: Callable[[Sequence[LabelledRequest]], list[str]]
) -> TierAccuracy:
    return score(tier, key, items, dict(zip((i.key for i in items), route(items))))


def shared_failures(a: TierAccuracy, b: TierAccuracy, items: Sequence[LabelledRequest]) -> float:
    """Of the items both voters got wrong, the share where they gave the same wrong label."""
    both_wrong = [
        i
        for i in items
        if a.answers.get(i.key) not in (None, i.intent, NOT_ROUTED)
        and b.answers.get(i.key) not in (None, i.intent, NOT_ROUTED)
    ]
    if not both_wrong:
        return 0.0
    return sum(a.answers[i.key] == b.answers[i.key] for i in both_wrong) / len(both_wrong)


def independent_voters(
    measured: dict[str, TierAccuracy], items: Sequence[LabelledRequest], identities: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The voters that count, most accurate first, and for each one left out the voter it duplicates.

    Two voters are one opinion when they are the same model asked the same way (same
    identity), or when their errors coincide on the sample (`MAX_SHARED_FAILURES`)."""
    kept: list[str] = []
    merged: dict[str, str] = {}
    for name in sorted(measured, key=lambda n: -measured[n].accuracy):
        twin = next(
            (
                k
                for k in kept
                if identities.get(k) == identities.get(name)
                or shared_failures(measured[k], measured[name], items) > MAX_SHARED_FAILURES
            ),
            None,
        )
        if twin is None:
            kept.append(name)
        else:
            merged[name] = twin
    return kept, merged
