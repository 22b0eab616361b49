"""Claim verification: the reusable fact-checking component (verifier v2).

A claim is judged against candidate passages: its cited chunks plus chunks retrieved for
it, cut into single sentences and windows of 2-3 adjacent sentences (`resources.verification.claim_features`).
Features (embedding similarity with the claim in query mode and the evidence in passage mode,
coverage of numbers, dates, named entities and content words, negation and antonym mismatch)
go to a small logistic-regression classifier fitted on human-labelled public benchmark data
(FRANK; see FACT_CHECKING.md). Nothing is decided by a hand-set threshold: the classifier's
calibrated probability decides, and each model configuration has its own calibration file,
keyed by its fingerprint (the embedding model, plus the judge model when a judge is used).

An optional model judge (the `strong` tier) reads the best candidates in delimited data
blocks and answers a verdict plus a verbatim quote; a quote that does not occur in the
evidence counts as no support, and a "contradiction" whose quote states the claim is
discarded. The judge's answer is one more feature under a calibration fitted with it;
otherwise it counts only as its measurement on a labelled sample says it helps
(`resources.verification.fact_check_judge`), and is recorded on the row either way.

The same code serves the `fact_checks` asset, Python callers and `ai-pipelines fact-check`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Callable, ClassVar, Literal, NamedTuple, Sequence

import numpy as np
from pydantic import BaseModel, Field

from resources import ModelSession, VectorStoreResource
from resources.documents.text import normalize
from resources.guardrails.prompt_injection import data_block
from resources.prompts import load_prompt
from resources.verification.claim_features import (
    FEATURE_NAMES,
    JUDGE_FEATURE,
    NAMES_MISSING,
    Candidate,
    ClaimFeatures,
    Passage,
    candidate_vectors,
    candidates_of,
    claim_features,
    conflict_between,
    content_words,
    quote_states_claim,
    sentences_to_embed,
)
from resources.verification.fact_check_judge import (
    JudgeCalibration,
    JudgeMode,
    balanced_accuracy,
    choose_mode,
    judged,
    load_sample,
    sample_features,
    stored_calibration,
)

__all__ = ["FEATURE_NAMES", "Passage", "conflict_between", "content_words"]  # re-exported for callers
LOG = logging.getLogger(__name__)

MIN_CLAIM_WORDS = 3
MAX_CLAIM_CHARS = 2000
Verdict = Literal["supported", "refuted", "not_enough_info"]
HERE = Path(__file__).parent
PROMPT = load_prompt(HERE, "verify_claim")
CALIBRATION_DIR = Path(__file__).parent / "calibration"
CALIBRATION_FILE = CALIBRATION_DIR / "fact_check.json"


class Claim(BaseModel):
    id: str
    text: str = Field(min_length=1)
    cited_chunk_ids: list[str] = []


class Thresholds(BaseModel):
    """Retrieval settings of the verifier. (v1 kept decision thresholds here; v2 has none.)"""

    candidates: int = 6


class FeatureValue(BaseModel):
    """One input of a classifier as a decision saw it; a linear classifier also says how hard it pushed."""

    name: str
    value: float
    weight: float | None = Field(default=None, description="Coefficient on the standardized value (linear kinds).")
    contribution: float | None = Field(
        default=None, description="Weight times the standardized value: this feature's share of the raw score."
    )


class ClassifierReading(BaseModel):
    """What a classifier made of one claim: any kind of classifier can give its inputs and probability."""

    kind: str
    features: list[FeatureValue] = Field(description="In the calibration's feature order.")
    raw_score: float | None = Field(default=None, description="The log-odds before the sigmoid, where there is one.")
    probability: float
    threshold: float

    @property
    def passes(self) -> bool:
        return self.probability >= self.threshold


class Classifier(BaseModel):
    """Logistic regression over standardized features: P(supported) = sigmoid(w . (x - mean) / scale + b).

    With `experts`, it is a gate and one logistic regression per kind of summary sentence: near-copies
    of the source and free rewordings need opposite readings of the same features (a high similarity
    proves little about a copied sentence with one wrong name, and a rewording is never very similar),
    so the gate recognises the kind from the features and the kind's own expert decides, at its own
    operating point (FACT_CHECKING.md)."""

    KIND: ClassVar[str] = "logistic regression"

    features: list[str]
    mean: list[float] = Field(default_factory=list)
    scale: list[float] = Field(default_factory=list)
    weights: list[float] = Field(default_factory=list)
    bias: float = 0.0
    threshold: float = Field(
        default=0.5,
        description="The operating point: supported at or above it. Chosen by cross-validation, where"
        " a wrong sentence published counts against recall on unsupported claims (FACT_CHECKING.md).",
    )
    kind: str = Field(default="", description="An expert's kind of sentence (e.g. extractive, abstractive).")
    gate: Classifier | None = Field(default=None, description="P(the second expert's kind), with `experts`.")
    experts: list[Classifier] = Field(default_factory=list, description="One per kind; the gate picks one.")

    def expert_for(self, values: dict[str, float]) -> Classifier:
        """The classifier that decides this claim: itself, or the expert its gate routes the claim to."""
        if not self.experts or self.gate is None:
            return self
        return self.experts[int(self.gate.probability(values) >= self.gate.threshold)]

    def supports(self, values: dict[str, float]) -> bool:
        expert = self.expert_for(values)
        return expert.probability(values) >= expert.threshold

    def _standardized(self, values: dict[str, float]) -> np.ndarray:
        return (np.array([values.get(f, 0.0) for f in self.features]) - np.array(self.mean)) / np.array(self.scale)

    def raw_score(self, values: dict[str, float]) -> float:
        expert = self.expert_for(values)
        if expert is not self:
            return expert.raw_score(values)
        return float(self._standardized(values) @ np.array(self.weights) + self.bias)

    def probability(self, values: dict[str, float]) -> float:
        z = self.raw_score(values)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def explain(self, values: dict[str, float]) -> ClassifierReading:
        """Each feature's push on the raw score, so a reader sees which ones carried the decision;
        another kind of classifier gives at least its features, probability and threshold."""
        expert = self.expert_for(values)
        if expert is not self:
            assert self.gate is not None
            reading = expert.explain(values)
            pushed = {f.name: f for f in reading.features}
            # Every input in the calibration's order: the expert's with their pushes, the gate's alone.
            features = [
                pushed.get(name) or FeatureValue(name=name, value=values.get(name, 0.0)) for name in self.features
            ]
            return reading.model_copy(
                update={
                    "kind": f"gate -> {expert.kind} expert ({self.KIND}; gate probability "
                    f"{self.gate.probability(values):.3f})",
                    "features": features,
                }
            )
        pushes = self._standardized(values) * np.array(self.weights)
        return ClassifierReading(
            kind=self.KIND,
            features=[
                FeatureValue(name=name, value=values.get(name, 0.0), weight=weight, contribution=float(push))
                for name, weight, push in zip(self.features, self.weights, pushes)
            ],
            raw_score=self.raw_score(values),
            probability=self.probability(values),
            threshold=self.threshold,
        )


class Calibration(BaseModel):
    """One model configuration's classifier and the figures it was fitted and checked on."""

    fingerprint: str = ""
    thresholds: Thresholds = Thresholds()
    classifier: Classifier | None = None
    refute_classifier: Classifier | None = Field(
        default=None, description="P(refuted) for a claim the first classifier rejects; else refuted = any conflict."
    )
    judge: bool = False
    fit_set: str = ""
    examples: int = 0
    heldout: dict[str, float] = Field(default_factory=dict, description="Balanced accuracy per held-out set.")
    fitted: dict[str, float] = Field(default_factory=dict, description="Figures on the data it was fitted on.")
    heldout_without_judge: dict[str, float] = Field(
        default_factory=dict,
        description="With the judge: the verifier alone on the same judged claims of each held-out set as `heldout`.",
    )
    judge_helps: bool = Field(
        default=False,
        description="With the judge: verifier + judge beat the verifier alone on those claims by the judge margin "
        "(unseen sets left out). A file without it proves nothing, so its judge does not count as a feature.",
    )
    judge_reason: str = Field(default="", description="Why `judge_helps` is what it is, with the figures.")


class JudgeAnswer(BaseModel):
    verdict: Verdict
    quote: str = Field(default="", description="Verbatim words from the evidence that support or contradict the claim.")


class JudgeReading(BaseModel):
    """What the judge's answer on one claim amounts to once its quote has been checked."""

    value: float = Field(default=0.0, description="+1 supported, -1 refuted, 0 no verified answer.")
    verdict: str = Field(default="", description="The verdict it answered ('' when it gave none).")
    quote: str = ""
    note: str = Field(default="", description="Why its answer was set aside, when it was.")
    failed: bool = Field(default=False, description="The request got no valid answer (outage or invalid output).")


class ClaimVerdict(BaseModel):
    id: str
    verdict: Verdict
    score: float = Field(description="Calibrated probability that the claim is supported.")
    evidence: list[str] = Field(description="Chunk ids of the deciding evidence passage.")
    evidence_sentence: str = ""
    support_score: float = 0.0
    refute_score: float = 0.0
    conflict: str = Field(default="", description="Why the best evidence conflicts (number, negation, antonym).")
    contested: bool = Field(default=False, description="Supported, but the best evidence also conflicts.")
    conflicting_chunk_ids: list[str] = []
    judge: str = Field(default="", description="The judge's verdict as answered, counted or not.")
    judge_counted: bool = Field(default=False, description="Whether the judge's answer took part in the decision.")
    judge_note: str = Field(default="", description="Why the judge's answer was set aside or not counted.")
    quote: str = Field(default="", description="The judge's verbatim quote, when it was found in the evidence.")
    reason: str = ""
    fragment: bool = Field(default=False, description="The claim asserts nothing checkable (too few content words).")
    features: dict[str, float] = Field(default_factory=dict)


class RuleCheck(BaseModel):
    """One hard rule on one claim: it vetoes when it breaks on a claim the classifier passed."""

    rule: str
    feature: str
    value: float
    broken: bool
    vetoed: bool


class JudgeExplanation(BaseModel):
    """How the model judge's answer took part, so a reader can tell a recorded answer from a counted one."""

    mode: str = Field(description="feature (fitted into the calibration), support, refute, overrule or none.")
    why: str = Field(description="Why its answer counts that way.")
    verdict: str = Field(description="What it answered ('' when it gave no valid answer).")
    quote: str = ""
    value: float = Field(description="+1 supported, -1 refuted, 0 no verified answer.")
    counted: bool
    note: str = ""
    cannot_raise: list[str] = Field(description="What the evidence lacks for the judge to raise the claim.")

    def lines(self) -> list[str]:
        answer = f"answered {self.verdict or 'nothing valid'}" + (f", quote {self.quote!r}" if self.quote else "")
        counted = "counted" if self.counted else "not counted"
        lines = [f"  judge (mode {self.mode}: {self.why}): {answer}; {counted}"]
        lines += [f"    {self.note}"] if self.note else []
        lacks = ", ".join(self.cannot_raise)
        return lines + ([f"    may not raise the claim: the evidence lacks its {lacks}"] if lacks else [])


class Evidence(BaseModel):
    chunk_id: str
    text: str


class ClaimExplanation(BaseModel):
    """Everything one verdict was decided from, as the calibration in use reads it: a refit (other
    features, another classifier kind) changes the content, never the shape."""

    id: str
    claim: str
    decision: Verdict
    reason: str = ""
    classifier: str = Field(default="", description="The classifier's kind ('' when the claim was never classified).")
    features: list[FeatureValue] = Field(default_factory=list, description="In the calibration's feature order.")
    raw_score: float | None = None
    probability: float | None = Field(default=None, description="P(supported) from the classifier.")
    threshold: float | None = None
    rules: list[RuleCheck] = Field(default_factory=list)
    vetoed_by: list[str] = Field(default_factory=list, description="Rules that overturned a passing classifier.")
    conflict: str = Field(default="", description="Why the best evidence contradicts the claim, if it does.")
    refute: ClassifierReading | None = Field(
        default=None, description="The refuted-vs-not-enough-info classifier, for a claim that was not supported."
    )
    judge: JudgeExplanation | None = Field(default=None, description="None when no judge was asked.")
    evidence: Evidence | None = Field(default=None, description="The best candidate the features were measured on.")
    verdict: ClaimVerdict

    def to_text(self) -> str:
        lines = [
            f"claim {self.id}: {self.claim}",
            f"  verdict: {self.decision}" + (f" ({self.reason})" if self.reason else ""),
        ]
        if self.probability is None or self.threshold is None:
            return "\n".join([*lines, "  not classified: the claim cannot be checked as it stands"])
        reading = ClassifierReading(
            kind=self.classifier,
            features=self.features,
            raw_score=self.raw_score,
            probability=self.probability,
            threshold=self.threshold,
        )
        lines += reading_lines("classifier", reading, "supported", "rejected")
        rules = "; ".join(
            f"{r.rule} ({r.feature} = {r.value:g}) {'broken' if r.broken else 'holds'}" for r in self.rules
        )
        lines.append(f"  hard rules: {rules}; vetoed by: {', '.join(self.vetoed_by) or 'none'}")
        lines.append(f"  conflict in the best evidence: {self.conflict or 'none'}")
        if self.refute is not None:
            lines += reading_lines("refute classifier", self.refute, "refuted", "not enough info")
        lines += self.judge.lines() if self.judge is not None else ["  judge: not asked"]
        where = f"[{self.evidence.chunk_id}] {self.evidence.text}" if self.evidence else "none found"
        return "\n".join([*lines, f"  best evidence: {where}"])


def reading_lines(title: str, reading: ClassifierReading, above: str, below: str) -> list[str]:
    """One layout for the supporting and the refuting classifier, so that the two read alike."""
    raw = f"raw score {reading.raw_score:+.4f}, " if reading.raw_score is not None else ""
    lines = [
        f"  {title} ({reading.kind}): {raw}probability {reading.probability:.4f}, threshold {reading.threshold:g}"
        f" -> {above if reading.passes else below}",
        "    feature: value" + (", weight, contribution to the raw score" if reading.raw_score is not None else ""),
    ]
    width = max((len(f.name) for f in reading.features), default=0)
    for f in reading.features:
        linear = (
            f"  {f.weight:+.4f}  {f.contribution:+.4f}" if f.weight is not None and f.contribution is not None else ""
        )
        lines.append(f"    {f.name:<{width}}  {f.value:.4f}{linear}")
    return lines


def model_fingerprint(embedding_model: str, judge_model: str = "") -> str:
    """Names a model configuration; a calibration only applies to the configuration it was fitted for."""
    return f"{embedding_model}|judge={judge_model or 'none'}"


def calibration_path(fingerprint: str) -> Path:
    return CALIBRATION_DIR / f"fact_check-{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}.json"


def load_calibration(fingerprint: str = "") -> Calibration:
    """The calibration for a fingerprint, else the bundled one (embedded default, no judge)."""
    for path in ([calibration_path(fingerprint)] if fingerprint else []) + [CALIBRATION_FILE]:
        if path.exists():
            return Calibration.model_validate_json(path.read_text())
    return Calibration()


def judge_feature(answer: JudgeAnswer | None, evidence: str) -> tuple[float, str]:
    """+1 supported, -1 refuted, 0 otherwise; a quote not found verbatim in the evidence counts as no support."""
    if answer is None or answer.verdict == "not_enough_info":
        return 0.0, ""
    quote = normalize(answer.quote)
    if not quote or quote not in normalize(evidence):
        return 0.0, ""
    return (1.0 if answer.verdict == "supported" else -1.0), answer.quote


def read_judge(claim: str, answer: JudgeAnswer | None, evidence: str) -> JudgeReading:
    """The judge's answer as evidence: its quote must occur in the evidence, and a refutation
    whose quote states the claim (`quote_states_claim`) is discarded, with the reason."""
    if answer is None:
        return JudgeReading()
    value, quote = judge_feature(answer, evidence)
    if value < 0 and quote_states_claim(claim, quote):
        return JudgeReading(
            verdict=answer.verdict,
            quote=quote,
            note=f"the judge's refutation is discarded: its quote states the claim ({quote!r})",
        )
    return JudgeReading(value=value, verdict=answer.verdict, quote=quote)


def judge_messages(claim: str, candidates: Sequence[Candidate]) -> list[dict[str, str]]:
    evidence = "\n\n".join(f"[{i + 1}] {c.text}" for i, c in enumerate(candidates))
    return [
        {
            "role": "user",
            "content": PROMPT.render(claim=data_block("claim", claim), evidence=data_block("evidence", evidence)),
        }
    ]


# Hard constraints, not thresholds: evidence that lacks a number the claim states, names another month, or
# lacks a name the claim states cannot support it, whatever the classifier (or a fooled judge) says
# (DESIGN.md section 5). Their effect on the measured sets is in FACT_CHECKING.md.
class HardRule(NamedTuple):
    """A hard rule as data, so that the verdict and its explanation apply the very same rules."""

    feature: str
    default: float
    broken: Callable[[float], bool]


# Numbers the evidence lacks (years included), a month that differs from the best evidence's, or a
# name of the claim (person, place, organisation) that none of the retrieved evidence holds.
HARD_RULES: dict[str, HardRule] = {
    "number": HardRule("all_evidence_number_coverage", 1.0, lambda value: value < 1.0),
    "date": HardRule("conflict_date", 0.0, bool),
    "name": HardRule(NAMES_MISSING, 0.0, bool),
}


def missing_facts(values: dict[str, float]) -> list[str]:
    return [kind for kind, rule in HARD_RULES.items() if rule.broken(values.get(rule.feature, rule.default))]


def describe_missing(features: ClaimFeatures) -> str:
    """What the evidence lacks, for a verdict's reason: the names themselves, so a reader sees which."""
    kinds = missing_facts(features.values)
    names = ", ".join(repr(n) for n in features.missing_names)
    return " and ".join(f"name {names}" if k == "name" and names else k for k in kinds)


def is_supported(classifier: Classifier, values: dict[str, float]) -> bool:
    return classifier.supports(values) and not missing_facts(values)


def decide(
    claim_id: str, features: ClaimFeatures, calibration: Calibration, judge: str = "", quote: str = ""
) -> ClaimVerdict:
    """The classifier's probability decides; a rejected claim whose best evidence conflicts is refuted."""
    assert calibration.classifier is not None, "no calibration for this model configuration"
    probability = calibration.classifier.probability(features.values)
    best = features.best
    supported = is_supported(calibration.classifier, features.values)
    missing = missing_facts(features.values)
    if supported:
        verdict: Verdict = "supported"
        reason = ""
    elif judge == "refuted" or (
        calibration.refute_classifier.probability(features.values) >= 0.5
        if calibration.refute_classifier
        else bool(features.conflict)
    ):
        verdict = "refuted"
        reason = f"the evidence contradicts the claim ({features.conflict or ('judge' if judge == 'refuted' else 'classifier')})"
    else:
        verdict = "not_enough_info"
        reason = "no evidence states the claim" if best else "no evidence found"
    if missing and not supported:
        reason += f"; the evidence does not contain the claim's {describe_missing(features)}"
    return ClaimVerdict(
        id=claim_id,
        verdict=verdict,
        score=round(probability, 4),
        evidence=[best.chunk_id] if best else [],
        evidence_sentence=best.text if best else "",
        support_score=round(features.values.get("similarity", 0.0), 4),
        refute_score=round(features.values.get("similarity", 0.0), 4) if features.conflict else 0.0,
        conflict=features.conflict,
        contested=supported and bool(features.conflict),
        conflicting_chunk_ids=[best.chunk_id] if supported and features.conflict and best else [],
        judge=judge,
        quote=quote,
        reason=reason,
        features={k: round(v, 4) for k, v in features.values.items()},
    )


def facts_missing_for_judge(features: ClaimFeatures) -> list[str]:
    """What the evidence lacks for a judge to raise the claim: a number, a date or a name of it."""
    return missing_facts(features.values) + (["entity"] if features.values.get("entity_coverage", 1.0) < 1.0 else [])


def apply_judge(verdict: ClaimVerdict, features: ClaimFeatures, reading: JudgeReading, mode: JudgeMode) -> ClaimVerdict:
    """The verdict once the judge's verified answer counts as its calibration chose (`mode`): it
    raises a claim only when the evidence also holds every number, date and named entity of the
    claim, so a judge fooled into answering "supported" cannot pass those. Under mode "none" (an
    unproven judge) the answer is recorded beside the decision and changes nothing."""
    supported = verdict.verdict == "supported"
    missing = facts_missing_for_judge(features)
    after = judged(supported, reading.value, not missing, mode)
    power = "support" if reading.value > 0 else "refute"
    counted = reading.value != 0 and mode in (power, "overrule")
    update: dict[str, object] = {"judge": reading.verdict, "judge_counted": counted, "judge_note": reading.note}
    if after and not supported:
        update.update(verdict="supported", reason="", conflict="")
    elif supported and not after:
        update.update(verdict="refuted", reason=f"the judge quotes a contradiction: {reading.quote!r}")
    elif counted and reading.value > 0 and not supported:
        update["reason"] = verdict.reason + f"; the judge's support is overruled: no {' or '.join(missing)} match"
    elif reading.value != 0 and not counted and (reading.value > 0) != supported:
        update["judge_note"] = (
            f"the judge answered {reading.verdict}; not counted: its calibration did not show that its "
            f"{'support' if reading.value > 0 else 'refutations'} help"
        )
    return verdict.model_copy(update=update)


def unverifiable(claim: Claim) -> str:
    """Why a claim cannot be verified at all, or "" — such claims get not_enough_info with this reason."""
    if len(claim.text) > MAX_CLAIM_CHARS:
        return f"claim is {len(claim.text)} characters; at most {MAX_CLAIM_CHARS} can be verified as one claim"
    if is_fragment(claim.text):
        return f"claim has fewer than {MIN_CLAIM_WORDS} content words: it asserts nothing checkable"
    return ""


def is_fragment(text: str) -> bool:
    """Too few content words to assert anything a verifier could check; rewording will not help."""
    return len(content_words(text)) < MIN_CLAIM_WORDS


class ClaimVerifier:
    """Verifies claims against one Chroma collection."""

    def __init__(
        self,
        vector_store: VectorStoreResource,
        collection: str,
        llm: ModelSession | None = None,
        thresholds: Thresholds | None = None,
        calibration: Calibration | None = None,
    ):
        """`llm` is the session the judge is asked in; without one, or on the embedded model, no judge."""
        self.vector_store = vector_store
        self.collection = collection
        self.llm = llm
        embedding_model = vector_store.embeddings.model_id
        self.fingerprint = model_fingerprint(embedding_model, llm.config.model_for("strong") if llm is not None else "")
        fitted = load_calibration(self.fingerprint) if self.uses_judge else None
        proven = fitted is not None and fitted.judge and fitted.judge_helps
        self.calibration = calibration or (fitted if fitted is not None and proven else load_calibration())
        if self.calibration.judge and not self.judge_is_feature:
            raise ValueError(
                f"calibration {self.calibration.fingerprint} was fitted with the judge, but "
                + (
                    "it does not record that the judge helps (ai-pipelines calibrate --judge measures that)"
                    if self.uses_judge
                    else "no configured endpoint is there to judge"
                )
            )
        self.thresholds = thresholds or self.calibration.thresholds
        self._judge_calibration: JudgeCalibration | None = None
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def uses_judge(self) -> bool:
        """A judge is asked only when the model is a configured endpoint: the embedded one, whose tiny
        model never quotes its evidence, is never a judge, whatever calibration names it."""
        return self.llm is not None and bool(self.llm.config.base_url)

    @property
    def judge_is_feature(self) -> bool:
        """The judge's answer is a feature only under a calibration fitted with it that measured, on
        the held-out sets, that it helps: a file that does not record it (written before that was
        measured) falls back to the judge's check on the calibration sample."""
        return self.uses_judge and self.calibration.judge and self.calibration.judge_helps

    def judge_mode(self) -> JudgeMode | Literal["feature"]:
        """How the judge's answer counts: as a feature of a calibration fitted with it, else as its
        measurement on the calibration sample chose ("none": recorded, not counted)."""
        if not self.uses_judge:
            return "none"
        if self.judge_is_feature:
            return "feature"
        return self.judge_calibration().mode

    def judge_calibration(self) -> JudgeCalibration:
        """The judge's measurement on the calibration sample: the stored one, else measured now."""
        if self._judge_calibration is None:
            assert self.llm is not None
            embedding_model = self.vector_store.embeddings.model_id
            self._judge_calibration = stored_calibration(self.llm.config, embedding_model, self._measure_judge)
        return self._judge_calibration

    def _measure_judge(self, fingerprint: str, sample: str) -> JudgeCalibration:
        """Every claim of the sample through the classifier and the judge, as the verifier would see it."""
        assert self.calibration.classifier is not None, "no calibration for this model configuration"
        items = load_sample()
        features = sample_features(self.vector_store.embeddings, items)
        readings = self._judge([Claim(id=i.id, text=i.claim) for i in items], features)
        gold = [i.label == "supported" for i in items]
        mode, figures, reason = choose_mode(
            gold,
            [is_supported(self.calibration.classifier, f.values) for f in features],
            [r.value for r in readings],
            [not facts_missing_for_judge(f) for f in features],
        )
        verdicts = [r.value > 0 for r in readings]
        calibration = JudgeCalibration(
            fingerprint=fingerprint,
            sample_hash=sample,
            claims=len(items),
            mode=mode,
            classifier_accuracy=figures["none"],
            judge_accuracy=round(balanced_accuracy(gold, verdicts), 3),
            accuracy_by_mode=figures,
            verified_answers=sum(r.value != 0 for r in readings),
            discarded_refutations=sum(bool(r.note) for r in readings),
            failed_answers=sum(r.failed for r in readings),
            reason=reason,
        )
        LOG.info(f"fact-check judge {fingerprint}: {reason}")
        return calibration

    def passages(self, claims: Sequence[Claim]) -> list[list[Passage]]:
        queried = self.vector_store.query(
            self.collection, [c.text for c in claims], n_results=self.thresholds.candidates
        )
        cited_ids = sorted({i for c in claims for i in c.cited_chunk_ids})
        cited = {h.id: h for h in self.vector_store.get(self.collection, cited_ids)} if cited_ids else {}
        out = []
        for claim, hits in zip(claims, queried):
            chosen = [cited[i] for i in claim.cited_chunk_ids if i in cited] + list(hits)
            seen: set[str] = set()
            out.append([Passage(chunk_id=h.id, text=h.text) for h in chosen if not (h.id in seen or seen.add(h.id))])
        return out

    def _candidate_vectors(self, candidates: list[Candidate]) -> np.ndarray:
        missing = [t for t in sentences_to_embed(candidates) if t not in self._vectors]
        if missing:
            for text, vector in zip(missing, self.vector_store.embeddings.embed_passages(missing)):
                self._vectors[text] = vector
        return candidate_vectors(candidates, self._vectors)

    def features(self, claims: Sequence[Claim]) -> list[ClaimFeatures]:
        if not claims:
            return []
        claim_vectors = self.vector_store.embeddings.embed_queries([c.text for c in claims])
        out = []
        for claim, vector, passages in zip(claims, claim_vectors, self.passages(claims)):
            candidates = candidates_of(passages)
            out.append(claim_features(claim.text, vector, candidates, self._candidate_vectors(candidates)))
        return out

    def _judge(self, claims: Sequence[Claim], features: list[ClaimFeatures]) -> list[JudgeReading]:
        """The judge's reading of each claim against its best candidate, from the strong tier."""
        assert self.llm is not None
        pending = [i for i, f in enumerate(features) if f.best is not None]
        evidence = {i: [features[i].best] for i in pending}  # type: ignore[list-item]
        answers = self.llm.map_structured(
            [judge_messages(claims[i].text, evidence[i]) for i in pending],
            JudgeAnswer,
            tier="strong",
            max_tokens=200,
        )
        out = [JudgeReading() for _ in claims]
        for i, answer in zip(pending, answers):
            parsed = answer if isinstance(answer, JudgeAnswer) else None
            out[i] = read_judge(claims[i].text, parsed, " ".join(c.text for c in evidence[i]))
            out[i].failed = parsed is None
        return out

    def verify(self, claims: Sequence[Claim]) -> list[ClaimVerdict]:
        """A verdict per claim, in order; a claim that cannot be checked gets not_enough_info with a reason."""
        return [d.verdict for d in self._decisions(claims)]

    def _decisions(self, claims: Sequence[Claim]) -> list[Decision]:
        reasons = [unverifiable(c) for c in claims]
        checkable = [c for c, r in zip(claims, reasons) if not r]
        features = self.features(checkable)
        mode = self.judge_mode() if checkable else "none"
        readings = (
            self._judge(checkable, features) if self.uses_judge and checkable else [JudgeReading()] * len(checkable)
        )
        decided = []
        for claim, feature, reading in zip(checkable, features, readings):
            # Only a verified refutation (its quote found in the evidence, not stating the claim) may
            # name a rejected claim refuted, and only where the judge counts; the bare verdict is recorded.
            refutation = "refuted" if reading.value < 0 and mode in ("feature", "refute", "overrule") else ""
            if mode == "feature":
                feature.values[JUDGE_FEATURE] = reading.value
            result = decide(claim.id, feature, self.calibration, judge=refutation, quote=reading.quote)
            if mode == "feature":
                update = {"judge": reading.verdict, "judge_counted": reading.value != 0, "judge_note": reading.note}
                result = result.model_copy(update=update)
            else:
                result = apply_judge(result, feature, reading, mode)
            decided.append(Decision(claim, result, feature, reading if self.uses_judge else None, mode))
        checked = iter(decided)
        return [
            next(checked)
            if not r
            else Decision(
                c,
                ClaimVerdict(
                    id=c.id, verdict="not_enough_info", score=0.0, evidence=[], reason=r, fragment=is_fragment(c.text)
                ),
            )
            for c, r in zip(claims, reasons)
        ]

    def explain(self, claims: Sequence[Claim]) -> list[ClaimExplanation]:
        """Each verdict with what decided it, read off the calibration in use (its classifier's own
        features, weights and threshold), so the explanation follows a refit without changes here."""
        out = []
        for decision in self._decisions(claims):
            verdict, features = decision.verdict, decision.features
            base = ClaimExplanation(
                id=verdict.id,
                claim=decision.claim.text,
                decision=verdict.verdict,
                reason=verdict.reason,
                verdict=verdict,
            )
            if features is None:
                out.append(base)
                continue
            classifier = self.calibration.classifier
            assert classifier is not None, "no calibration for this model configuration"
            values = features.values
            reading = classifier.explain(values)
            broken = missing_facts(values)
            rules = [
                RuleCheck(
                    rule=kind,
                    feature=rule.feature,
                    value=values.get(rule.feature, rule.default),
                    broken=kind in broken,
                    vetoed=kind in broken and reading.passes,
                )
                for kind, rule in HARD_RULES.items()
            ]
            refute = self.calibration.refute_classifier
            judge = None
            if decision.reading is not None:
                why = (
                    f"the calibration {self.calibration.fingerprint} was fitted with it as a feature; it "
                    + self.calibration.judge_reason
                    if decision.mode == "feature"
                    else self.judge_calibration().reason
                )
                judge = JudgeExplanation(
                    mode=decision.mode,
                    why=why,
                    verdict=decision.reading.verdict,
                    quote=decision.reading.quote,
                    value=decision.reading.value,
                    counted=verdict.judge_counted,
                    note=verdict.judge_note or ("no valid answer" if decision.reading.failed else ""),
                    cannot_raise=facts_missing_for_judge(features),
                )
            out.append(
                base.model_copy(
                    update={
                        "classifier": reading.kind,
                        "features": reading.features,
                        "raw_score": reading.raw_score,
                        "probability": reading.probability,
                        "threshold": reading.threshold,
                        "rules": rules,
                        "vetoed_by": [r.rule for r in rules if r.vetoed],
                        "conflict": features.conflict,
                        "refute": refute.explain(values) if refute and not is_supported(classifier, values) else None,
                        "judge": judge,
                        "evidence": Evidence(chunk_id=features.best.chunk_id, text=features.best.text)
                        if features.best
                        else None,
                    }
                )
            )
        return out


class Decision(NamedTuple):
    """Kept beside the verdict so that an explanation shows the values that decided it, not a recomputation."""

    claim: Claim
    verdict: ClaimVerdict
    features: ClaimFeatures | None = None
    reading: JudgeReading | None = None  # None when no judge was asked
    mode: JudgeMode | Literal["feature"] = "none"


def read_claims(path: Path) -> list[Claim]:
    """Claims from JSONL, one {"id", "text"} object a line; a bad line is an error naming the line."""
    claims, errors = read_claims_lenient(path)
    if errors:
        raise ValueError(errors[0])
    return claims


def read_claims_lenient(path: Path) -> tuple[list[Claim], list[str]]:
    """Claims from JSONL, and one message per bad line (naming the file and line) instead of stopping."""
    claims: list[Claim] = []
    errors: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            claims.append(Claim.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(f"{path}:{number}: not a claim object with a non-empty 'id' and 'text': {detail}")
    return claims, errors
