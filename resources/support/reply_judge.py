"""The reply rubric's judge, proven on labelled replies before its passes let a reply out.

A reply that passes the rubric goes to approval and out to a customer, so the model that
critiques it must first show it can tell a good reply from a bad one: it critiques the
labelled replies that ship with the support desk (resources/support/desk/reply_rubric_examples.jsonl:
good answers, and prompt echoes, invented or over-limit refunds, another customer's data,
rude, off-topic and non-answers), and its balanced accuracy is compared with the floor.
Under it, no reply is delivered on the judge's word: its rubric verdict is `unjudged` and
a person answers the ticket.
"""

from __future__ import annotations

from typing import Any

from resources import ModelSession
from resources.guardrails.prompt_injection import data_block
from resources.pipeline_config import SUPPORT_DESK_DIR
from resources.support.reply_refinement import JUDGE_TIER, RubricCritique, critique_request, judged_failed
from resources.support.triage_prompts import CRITIQUE, MAX_TOKENS
from resources.verification.judge_calibration import (
    DEFAULT_MIN_JUDGE_ACCURACY,
    CalibrationFileError,
    JudgeCalibration,
    LabelledExample,
    calibrate,
    read_examples,
)

REPLY_RUBRIC_EXAMPLES = SUPPORT_DESK_DIR / "reply_rubric_examples.jsonl"
MIN_JUDGE_ACCURACY = DEFAULT_MIN_JUDGE_ACCURACY
ITEM_FIELDS = ("ticket", "context", "refund_limit")


def reply_examples() -> list[LabelledExample]:
    """The labelled replies, each with what the judge is shown; a malformed one names its line."""
    examples = read_examples(REPLY_RUBRIC_EXAMPLES)
    for number, example in enumerate(examples, 1):
        missing = [f for f in ITEM_FIELDS if f not in example.item] + (
            [] if isinstance(example.answer.get("reply"), str) else ["answer.reply"]
        )
        if missing:
            raise CalibrationFileError(f"{REPLY_RUBRIC_EXAMPLES}: example {number} lacks {', '.join(missing)}")
    return examples


def example_request(example: LabelledExample) -> list[dict[str, Any]]:
    """A labelled reply, put to the judge as a real draft is: its ticket and context as data blocks."""
    item = example.item
    return critique_request(
        str(example.answer["reply"]),
        ticket_block=data_block("ticket", str(item["ticket"])),
        context_block=data_block("context", str(item["context"])),
        refund_limit=float(item["refund_limit"]),
    )


def calibrate_reply_judge(llm: ModelSession) -> JudgeCalibration:
    """The reply judge's balanced accuracy on the labelled replies (cached per judge configuration)."""
    return calibrate(
        llm,
        tier=JUDGE_TIER,
        examples=reply_examples(),
        request=example_request,
        schema=RubricCritique,
        passes=lambda critique: not judged_failed(critique),
        prompt_version=CRITIQUE.version,
        max_tokens=MAX_TOKENS["critique"],
    )
