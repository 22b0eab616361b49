"""The rubric judge of a declared step: a model's verdict on each answer, counted only from a proven judge.

A rubric says what no schema can ("the headline states only what the summary says"), so a
model judges it, and a model judge is only as good as its measured accuracy. Before a
step's answers are judged, the judge scores the labelled examples the step ships
(resources/verification/judge_calibration.py); a judge under the check's floor judges nothing, and
every answer it would have judged carries the verdict `unjudged` instead of a pass that
means nothing. The judge sees what the answer was written from as well as the answer,
since "states only what the input says" cannot be judged from the answer alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, Field

from resources import Messages, ModelSession, Tier
from resources.guardrails.prompt_injection import neutralize
from resources.prompts import Prompt
from resources.verification.judge_calibration import UNJUDGED, JudgeCalibration, LabelledExample, calibrate

RUBRIC_PROMPT = Prompt(
    name="judge_rubric",
    template=(Path(__file__).parent / "prompts" / "judge_rubric.txt").read_text(encoding="utf-8"),
)
JUDGE_MAX_TOKENS = 120
RubricOutcome = Literal["passed", "failed", "unjudged", ""]


class RubricVerdict(BaseModel):
    """A judge's verdict on one answer."""

    passed: bool
    reason: str = Field(default="", max_length=200)


def _json(value: dict[str, Any]) -> str:
    return neutralize(json.dumps(value, ensure_ascii=False, default=str))


def rubric_request(rubric: str, item: dict[str, Any], answer: dict[str, Any]) -> Messages:
    """The judge's request for one answer: the same for a labelled example and for a real answer."""
    content = RUBRIC_PROMPT.render(rubric=neutralize(rubric), input=_json(item), answer=_json(answer))
    return [{"role": "user", "content": content}]


def judge_version(rubric: str) -> str:
    """What the judge is asked, as part of its calibration's key: a new rubric is a new judge."""
    return hashlib.sha256(f"{RUBRIC_PROMPT.version}\n{rubric}".encode()).hexdigest()[:12]


def calibrate_judge(
    llm: ModelSession, *, tier: Tier, rubric: str, examples: Sequence[LabelledExample]
) -> JudgeCalibration:
    """The judge's measured accuracy on the step's labelled examples (cached per judge configuration)."""
    return calibrate(
        llm,
        tier=tier,
        examples=examples,
        request=lambda e: rubric_request(rubric, e.item, e.answer),
        schema=RubricVerdict,
        passes=lambda verdict: verdict.passed,
        prompt_version=judge_version(rubric),
        max_tokens=JUDGE_MAX_TOKENS,
    )


def judge_answers(
    llm: ModelSession,
    *,
    tier: Tier,
    rubric: str,
    answers: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    proven: bool,
    partitions: Sequence[str] | None = None,
) -> list[tuple[RubricOutcome, str]]:
    """(verdict, reason) per (input, answer): judged by the model when its judge is proven,
    else `unjudged` without a call. A judge call that failed is `unjudged` too: no verdict is
    not a pass."""
    if not proven:
        return [(UNJUDGED, "the judge is unproven (under its calibration floor)")] * len(answers)
    verdicts = llm.map_structured(
        [rubric_request(rubric, item, answer) for item, answer in answers],
        RubricVerdict,
        tier=tier,
        max_tokens=JUDGE_MAX_TOKENS,
        partitions=partitions,
    )
    return [
        (UNJUDGED, f"no verdict: {str(v)[:180]}")
        if isinstance(v, Exception)
        else ("passed" if v.passed else "failed", v.reason)
        for v in verdicts
    ]
