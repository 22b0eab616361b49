"""The judge's answers on a fixed sample of labelled claims, as one more feature of each.

A judge costs a model call a claim, so it answers a small sample per set, chosen before any
answer is seen, and its answer is read as a run reads it (a quote must occur in the evidence).
"""

from __future__ import annotations

import time
from typing import Sequence

from pydantic import BaseModel, Field

from resources import ModelSession
from resources.verification.claim_features import JUDGE_FEATURE
from resources.verification.claim_verification import JudgeAnswer, judge_messages, read_judge
from resources.verification.fitting.scoring import Scored, labelled

JUDGE_VERDICT = "judge_verdict"


class JudgeStats(BaseModel):
    """What the judge answered: parsed verdicts, and how many carried a quote found in the evidence."""

    asked: int = 0
    failed: int = 0
    verdicts: dict[str, int] = Field(default_factory=dict)
    verified_quotes: int = 0
    seconds: float = 0.0
    raw_balanced_accuracy: float | None = Field(
        default=None,
        description="Its bare verdict (supported or not) as the decision, quote ignored: is there any signal at all?",
    )


def judge_sample(scored: Sequence[Scored], size: int) -> list[Scored]:
    """`size` labelled claims, half of each label where possible, evenly spread over the set (so
    over its articles): a fixed choice made before any judge answer is seen."""
    out: list[Scored] = []
    for label in (True, False):
        pool = [s for s in labelled(scored) if s.supported == label]
        take = min(len(pool), (size + (1 if label else 0)) // 2)
        out += [pool[int((i + 0.5) * len(pool) / take)] for i in range(take)] if take else []
    return out


def add_judge(scored: Sequence[Scored], llm: ModelSession, candidates: int = 1) -> JudgeStats:
    """The model judge's answer on each claim's best candidates, as the `judge` feature (and its
    bare verdict as `judge_verdict`: 1 supported, else 0; for the statistics only)."""
    started = time.monotonic()
    pending = [s for s in scored if s.features.best is not None]
    evidence = []
    for item in pending:
        assert item.features.best is not None
        evidence.append([item.features.best][:candidates])
    answers = llm.map_structured(
        [judge_messages(s.claim, e) for s, e in zip(pending, evidence)], JudgeAnswer, tier="strong", max_tokens=200
    )
    stats = JudgeStats(asked=len(pending))
    for item, cands, answer in zip(pending, evidence, answers):
        parsed = answer if isinstance(answer, JudgeAnswer) else None
        # Read as a run reads it: a "refutation" whose quote states the claim is discarded.
        reading = read_judge(item.claim, parsed, " ".join(c.text for c in cands))
        value, quote = reading.value, reading.quote if reading.value else ""
        item.features.values[JUDGE_FEATURE] = value
        item.features.values[JUDGE_VERDICT] = float(parsed is not None and parsed.verdict == "supported")
        stats.failed += parsed is None
        if parsed is not None:
            stats.verdicts[parsed.verdict] = stats.verdicts.get(parsed.verdict, 0) + 1
        stats.verified_quotes += bool(quote)
    stats.seconds = round(time.monotonic() - started, 1)
    return stats
