"""Scripts of the fact-check judge and the claim splitter for the fake OpenAI server.

A judge is measured on the labelled calibration sample before its answer counts, so a script
that stands for a capable judge must answer the sample as a capable judge would; a script
that stands for a small model answers the sample as badly as it answers everything else.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from resources.documents.text import normalize
from resources.verification.fact_check_judge import load_sample
from tests.fake_openai import data_block

Script = Callable[[list[dict[str, str]]], Any]
SAMPLE_LABELS = {normalize(item.claim): item.label for item in load_sample()}


def evidence_lines(messages: list[dict[str, str]]) -> list[str]:
    return re.findall(r"^\[\d+\] (.+)$", data_block(messages, "evidence") or "", flags=re.M)


def claim_of(messages: list[dict[str, str]]) -> str:
    return data_block(messages, "claim") or ""


def best_line(messages: list[dict[str, str]]) -> str:
    """The evidence line sharing most words with the claim: what a judge would quote."""
    words = set(claim_of(messages).lower().split())
    return max(evidence_lines(messages), key=lambda line: len(words & set(line.lower().split())), default="")


def knows_the_sample(otherwise: Script) -> Script:
    """A capable judge: right on every claim of the calibration sample, quoting its evidence
    verbatim; `otherwise` answers every other claim."""

    def script(messages: list[dict[str, str]]) -> dict[str, Any]:
        label = SAMPLE_LABELS.get(normalize(claim_of(messages)))
        if label is None:
            return otherwise(messages)
        if label == "supported":
            return {"verdict": "supported", "quote": best_line(messages)}
        return {"verdict": "refuted", "quote": best_line(messages)}

    return script


def quotes_support_as_contradiction(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A small model's judge: "refuted" for every claim, quoting the sentence that states it."""
    return {"verdict": "refuted", "quote": best_line(messages)}


_NAME = re.compile(r"[A-Z][a-z]+(?: [A-Z][a-z]+)+")
_DATE = re.compile(r"\d+(?: [A-Z][a-z]+)?(?: \d{4})?|(?:[A-Z][a-z]+ )?\d{4}")


def splits_into_fragments(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A small model's split: the sentence's names, dates and figures, each on its own, asked again or not."""
    sentence = data_block(messages, "claim") or ""
    fragments = list(dict.fromkeys(_NAME.findall(sentence) + _DATE.findall(sentence)))
    return {"claims": fragments or [" ".join(sentence.split()[:2])]}
