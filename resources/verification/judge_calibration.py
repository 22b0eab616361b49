"""Judge calibration: a model judge scores labelled good and bad outputs before its verdicts count.

A check whose verdict comes from a model is only as good as its judge, and a small model
asked "does this answer meet the rubric?" says yes to almost anything, prompt echoes and
invented facts included. So every model-judged gate ships a small labelled set of good
and bad outputs; before its verdicts count, the judge scores that set and its balanced
accuracy (the mean of the shares of good outputs it passes and of bad outputs it fails,
so that passing everything scores 0.5 however the set is balanced) is compared with the
gate's floor. A judge under the floor is "unproven": its passes decide nothing.

The measurement is keyed by the judge (its endpoints, models and temperature), the
labelled examples and the judge's prompt, and kept beside the response cache, so it is
paid once per judge configuration rather than on every run; a measurement in which some
examples got no answer (an outage) is used but never kept.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, TypeVar

from pydantic import BaseModel, Field, ValidationError

from resources.gateway.config import GatewayConfig, Tier
from resources.gateway.ledger import CallLedger
from resources.gateway.request import Messages
from resources.gateway.session import ModelSession
from resources.secrets import reveal
from resources.storage.state_store import StateStore, upsert_sql

DEFAULT_MIN_JUDGE_ACCURACY = 0.8
UNJUDGED = "unjudged"
T = TypeVar("T", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)


class LabelledExample(BaseModel):
    """One output a person labelled, with what it was written from."""

    label: Literal["good", "bad"]
    kind: str = Field(description="Why it is good or bad: good, prompt_echo, invented_fact, wrong_kind, off_topic, ...")
    item: dict[str, Any] = Field(default={}, description="The inputs the output was written for.")
    answer: dict[str, Any] = Field(description="The output, as the gated step stores it.")

    @property
    def good(self) -> bool:
        return self.label == "good"


class CalibrationFileError(ValueError):
    """A labelled examples file that cannot calibrate a judge; the message names the file and line."""


def read_examples(path: Path) -> list[LabelledExample]:
    """The labelled examples of a JSONL file: both labels must occur, or balanced accuracy means nothing."""
    if not path.is_file():
        raise CalibrationFileError(f"{path}: no such calibration file")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            examples.append(LabelledExample.model_validate_json(line))
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors()[:3])
            raise CalibrationFileError(f"{path}:{number}: {problem}") from None
    labels = {e.label for e in examples}
    if labels != {"good", "bad"}:
        raise CalibrationFileError(f"{path}: needs both good and bad examples (has {sorted(labels) or 'none'})")
    return examples


class JudgeCalibration(BaseModel):
    """How well one judge configuration told the labelled good outputs from the bad."""

    key: str
    judge: str
    examples: int
    good_passed: float = Field(description="Share of the good examples the judge passed.")
    bad_failed: float = Field(description="Share of the bad examples the judge failed.")
    balanced_accuracy: float
    unanswered: int = Field(default=0, description="Examples the judge gave no answer for (counted as misjudged).")
    misjudged: list[str] = Field(default=[], description="The misjudged examples, as label/kind.")

    def proven(self, floor: float) -> bool:
        return self.balanced_accuracy >= floor

    def metadata(self, floor: float) -> dict[str, object]:
        """The figures a check records, whatever it decided."""
        return {
            "judge": self.judge,
            "judge_balanced_accuracy": self.balanced_accuracy,
            "judge_calibration_examples": self.examples,
            "min_judge_accuracy": floor,
            "judge_good_passed": self.good_passed,
            "judge_bad_failed": self.bad_failed,
            "judge_unanswered": self.unanswered,
            "judge_misjudged": ", ".join(self.misjudged[:12]),
        }

    def unproven_reason(self, floor: float) -> str:
        unanswered = (
            f" ({self.unanswered} got no valid answer, counted as misjudged; measured again on the next run)"
            if self.unanswered
            else ""
        )
        return (
            f"the judge ({self.judge}) scored a balanced accuracy of {self.balanced_accuracy:.2f} on "
            f"{self.examples} labelled examples{unanswered}, under the floor of {floor:.2f}: "
            "its verdicts are not trusted"
        )


def judge_fingerprint(config: GatewayConfig, tier: Tier) -> str:
    """The judge configuration a calibration holds for: every endpoint and model of the tier's
    fallback chain (any of them may answer), and the sampling temperature."""
    chain = [f"{e.base_url or 'embedded'}={e.model_for(tier)}" for e in config.chain()]
    return f"{tier}:{'|'.join(chain)}@t{config.temperature:g}"


def examples_hash(examples: Sequence[LabelledExample]) -> str:
    text = json.dumps([e.model_dump(mode="json") for e in examples], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def calibration_key(judge: str, examples: Sequence[LabelledExample], prompt_version: str) -> str:
    return hashlib.sha256(f"{judge}\n{examples_hash(examples)}\n{prompt_version}".encode()).hexdigest()[:24]


class CalibrationStore:
    """Measured calibrations by key, in the response cache's database: a rubric judge's, or the
    fact-check judge's measurement on its sample, each as the JSON of its own model."""

    def __init__(self, location: str):
        self._db = StateStore(
            location,
            "create table if not exists judge_calibrations (key text primary key, value text not null, "
            "created_at text not null default current_timestamp);",
            durable=False,
        )

    def get(self, key: str, kind: type[M]) -> M | None:
        """The measurement kept under `key`; None when there is none, or when it no longer reads as
        `kind` (the model changed since): it is then measured again and overwritten."""
        row = self._db.fetchone("select value from judge_calibrations where key = ?", (key,))
        try:
            return kind.model_validate_json(row[0]) if row else None
        except ValidationError:
            return None

    def put(self, key: str, measurement: BaseModel) -> None:
        self._db.execute(
            upsert_sql("judge_calibrations", ["key", "value"], "key"), (key, measurement.model_dump_json())
        )


_stores: dict[str, CalibrationStore] = {}


def calibration_store(config: GatewayConfig) -> CalibrationStore | None:
    """None when the response cache is off: then nothing of a run is kept for the next."""
    if not config.cache_path:
        return None
    location = reveal(config.cache_path)
    if location not in _stores:
        _stores[location] = CalibrationStore(location)
    return _stores[location]


def calibration_usage(ledger: CallLedger) -> dict[str, object]:
    """What measuring the judge cost in this run (nothing when the measurement was stored)."""
    summary = ledger.summary()
    return {
        "judge_calibration_requests": summary.requests,
        "judge_calibration_cache_hits": summary.cache_hits,
        "judge_calibration_tokens": summary.prompt_tokens + summary.completion_tokens,
        "judge_calibration_cost_usd": summary.cost_usd,
    }


def class_recalls(gold: Sequence[bool], predicted: Sequence[bool]) -> dict[bool, float]:
    """For each class present in `gold`, the share of its items predicted as that class."""
    recalls = {}
    for label in (True, False):
        hits = [p == label for g, p in zip(gold, predicted) if g == label]
        if hits:
            recalls[label] = sum(hits) / len(hits)
    return recalls


def balanced_accuracy(gold: Sequence[bool], predicted: Sequence[bool]) -> float:
    """The mean of the recall on each class, a class absent from `gold` left out: a judge (or a
    classifier) that says the same thing of everything scores 0.5 however the set is balanced."""
    recalls = class_recalls(gold, predicted)
    return sum(recalls.values()) / len(recalls) if recalls else 0.0


def score(judged: Sequence[tuple[LabelledExample, bool | None]]) -> tuple[float, float, float, list[str]]:
    """(good passed, bad failed, balanced accuracy, misjudged) of verdicts; None (no answer) is misjudged."""
    recalls = class_recalls([e.good for e, _ in judged], [(not e.good) if v is None else v for e, v in judged])
    good_passed, bad_failed = recalls.get(True, 0.0), recalls.get(False, 0.0)
    misjudged = [f"{e.label}/{e.kind}" for e, v in judged if v is None or v != e.good]
    return round(good_passed, 3), round(bad_failed, 3), round((good_passed + bad_failed) / 2, 3), misjudged


def calibrate(
    llm: ModelSession,
    *,
    tier: Tier,
    examples: Sequence[LabelledExample],
    request: Callable[[LabelledExample], Messages],
    schema: type[T],
    passes: Callable[[T], bool],
    prompt_version: str,
    max_tokens: int,
) -> JudgeCalibration:
    """The judge's calibration on `examples`: from the store when this configuration was
    measured before, else measured now (one judge call per example) and stored.

    `request` builds the judge's request for an example exactly as the gate builds it for a
    real output, and `passes` reads the judge's answer as the gate does, so what is measured
    is the gate's own judgement."""
    judge = judge_fingerprint(llm.config, tier)
    key = calibration_key(judge, examples, prompt_version)
    store = calibration_store(llm.config)
    known = store.get(key, JudgeCalibration) if store is not None else None
    if known is not None:
        return known
    answers = llm.map_structured([request(e) for e in examples], schema, tier=tier, max_tokens=max_tokens)
    judged = [(e, None if isinstance(a, Exception) else passes(a)) for e, a in zip(examples, answers)]
    good_passed, bad_failed, accuracy, misjudged = score(judged)
    calibration = JudgeCalibration(
        key=key,
        judge=judge,
        examples=len(examples),
        good_passed=good_passed,
        bad_failed=bad_failed,
        balanced_accuracy=accuracy,
        unanswered=sum(v is None for _, v in judged),
        misjudged=misjudged,
    )
    if store is not None and not calibration.unanswered:
        store.put(key, calibration)
    return calibration
