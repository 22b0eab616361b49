"""Claim verification: the reusable fact-checking component (verifier v2).

A claim is judged against candidate passages: its cited chunks plus chunks retrieved for
it, cut into single sentences and windows of 2-3 adjacent sentences (`resources.claim_features`).
Features (embedding similarity with the claim in query mode and the evidence in passage mode,
coverage of numbers, dates, named entities and content words, negation and antonym mismatch)
go to a small logistic-regression classifier fitted on human-labelled public benchmark data
(FRANK; see FACT_CHECKING.md). Nothing is decided by a hand-set threshold: the classifier's
calibrated probability decides, and each model configuration has its own calibration file,
keyed by its fingerprint (the embedding model, plus the judge model when a judge is used).

An optional model judge (the `strong` tier) reads the best candidates in delimited data
blocks and answers a verdict plus a verbatim quote; a quote that does not occur in the
evidence counts as no support. The judge's answer is one more feature, used only under a
calibration fitted with it.

The same code serves the `fact_checks` asset, Python callers and `ai-pipelines fact-check`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

from assets.prompts import load_prompt
from resources import CallLedger, ModelResource, VectorStoreResource
from resources.claim_features import (
    FEATURE_NAMES,
    JUDGE_FEATURE,
    Candidate,
    ClaimFeatures,
    Passage,
    candidate_vectors,
    candidates_of,
    claim_features,
    conflict_between,
    content_words,
    sentences_to_embed,
)
from resources.prompt_injection import data_block
from resources.text import normalize

__all__ = ["FEATURE_NAMES", "Passage", "conflict_between", "content_words"]  # re-exported for callers

MIN_CLAIM_WORDS = 3
MAX_CLAIM_CHARS = 2000
Verdict = Literal["supported", "refuted", "not_enough_info"]
PROMPT = load_prompt("verify_claim")
CALIBRATION_DIR = Path(__file__).parent / "calibration"
CALIBRATION_FILE = CALIBRATION_DIR / "fact_check.json"


class Claim(BaseModel):
    id: str
    text: str = Field(min_length=1)
    cited_chunk_ids: list[str] = []


class Thresholds(BaseModel):
    """Retrieval settings of the verifier. (v1 kept decision thresholds here; v2 has none.)"""

    candidates: int = 6


class Classifier(BaseModel):
    """Logistic regression over standardized features: P(supported) = sigmoid(w . (x - mean) / scale + b)."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float

    def probability(self, values: dict[str, float]) -> float:
        x = (np.array([values.get(f, 0.0) for f in self.features]) - np.array(self.mean)) / np.array(self.scale)
        z = float(x @ np.array(self.weights) + self.bias)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


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


class JudgeAnswer(BaseModel):
    verdict: Verdict
    quote: str = Field(default="", description="Verbatim words from the evidence that support or contradict the claim.")


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
    judge: str = ""
    quote: str = Field(default="", description="The judge's verbatim quote, when it was found in the evidence.")
    reason: str = ""
    features: dict[str, float] = Field(default_factory=dict)


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


def judge_messages(claim: str, candidates: Sequence[Candidate]) -> list[dict[str, str]]:
    evidence = "\n\n".join(f"[{i + 1}] {c.text}" for i, c in enumerate(candidates))
    return [
        {
            "role": "user",
            "content": PROMPT.render(claim=data_block("claim", claim), evidence=data_block("evidence", evidence)),
        }
    ]


# Hard constraints, not thresholds: evidence that lacks a number the claim states, or names another month, cannot
# support it, whatever the classifier (or a fooled judge) says. On every measured set they change
# no decision of the classifier (FACT_CHECKING.md); they make the guarantee explicit.
def missing_facts(values: dict[str, float]) -> list[str]:
    """Numbers the evidence lacks (years included), or a month that differs from the best evidence's."""
    missing = ["number"] if values.get("all_evidence_number_coverage", 1.0) < 1.0 else []
    return missing + (["date"] if values.get("conflict_date", 0.0) else [])


def is_supported(classifier: Classifier, values: dict[str, float]) -> bool:
    return classifier.probability(values) >= 0.5 and not missing_facts(values)


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
        reason += f"; the evidence does not contain the claim's {' and '.join(missing)}"
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


def overrule_by_judge(verdict: ClaimVerdict, features: ClaimFeatures, judge_value: float, quote: str) -> ClaimVerdict:
    """An uncalibrated judge's verified answer (its quote found verbatim in the evidence) decides,
    but it can only raise a claim to supported when the evidence also holds every number, date and
    named entity of the claim, so a judge fooled into answering "supported" cannot pass those."""
    if judge_value > 0 and verdict.verdict != "supported":
        missing = missing_facts(features.values) + (
            ["entity"] if features.values.get("entity_coverage", 1.0) < 1.0 else []
        )
        if not missing:
            return verdict.model_copy(update={"verdict": "supported", "reason": "", "conflict": ""})
        return verdict.model_copy(
            update={"reason": verdict.reason + f"; the judge's support is overruled: no {' or '.join(missing)} match"}
        )
    if judge_value < 0 and verdict.verdict == "supported":
        return verdict.model_copy(
            update={"verdict": "refuted", "reason": f"the judge quotes a contradiction: {quote!r}"}
        )
    return verdict


def unverifiable(claim: Claim) -> str:
    """Why a claim cannot be verified at all, or "" — such claims get not_enough_info with this reason."""
    if len(claim.text) > MAX_CLAIM_CHARS:
        return f"claim is {len(claim.text)} characters; at most {MAX_CLAIM_CHARS} can be verified as one claim"
    if len(content_words(claim.text)) < MIN_CLAIM_WORDS:
        return f"claim has fewer than {MIN_CLAIM_WORDS} content words: it asserts nothing checkable"
    return ""


class ClaimVerifier:
    """Verifies claims against one Chroma collection."""

    def __init__(
        self,
        vector_store: VectorStoreResource,
        collection: str,
        model: ModelResource | None = None,
        thresholds: Thresholds | None = None,
        ledger: CallLedger | None = None,
        calibration: Calibration | None = None,
    ):
        self.vector_store = vector_store
        self.collection = collection
        self.model = model
        self.ledger = ledger or CallLedger()
        embedding_model = vector_store.embeddings.model_id
        judged = (
            load_calibration(model_fingerprint(embedding_model, model.model_for("strong")))
            if model is not None
            else None
        )
        self.calibration = calibration or (judged if judged is not None and judged.judge else load_calibration())
        self.thresholds = thresholds or self.calibration.thresholds
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def uses_judge(self) -> bool:
        """A judge is asked when it is calibrated for this model, or when the model is a configured
        endpoint (not the embedded one, whose tiny model never quotes its evidence)."""
        return self.model is not None and (self.calibration.judge or bool(self.model.base_url))

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

    def _judge(self, claims: Sequence[Claim], features: list[ClaimFeatures]) -> list[tuple[float, str, str]]:
        """(feature value, verdict, verified quote) per claim, from the strong tier."""
        assert self.model is not None
        pending = [i for i, f in enumerate(features) if f.best is not None]
        evidence = {i: [features[i].best] for i in pending}  # type: ignore[list-item]
        answers = self.model.map_structured(
            [judge_messages(claims[i].text, evidence[i]) for i in pending],
            JudgeAnswer,
            tier="strong",
            max_tokens=200,
            ledger=self.ledger,
        )
        out: list[tuple[float, str, str]] = [(0.0, "", "")] * len(claims)
        for i, answer in zip(pending, answers):
            parsed = answer if isinstance(answer, JudgeAnswer) else None
            value, quote = judge_feature(parsed, " ".join(c.text for c in evidence[i]))
            out[i] = (value, parsed.verdict if parsed else "", quote)
        return out

    def verify(self, claims: Sequence[Claim]) -> list[ClaimVerdict]:
        """A verdict per claim, in order; a claim that cannot be checked gets not_enough_info with a reason."""
        reasons = [unverifiable(c) for c in claims]
        checkable = [c for c, r in zip(claims, reasons) if not r]
        features = self.features(checkable)
        judged = self._judge(checkable, features) if self.uses_judge and checkable else [(0.0, "", "")] * len(checkable)
        decided = []
        for claim, feature, (value, verdict, quote) in zip(checkable, features, judged):
            if self.uses_judge:
                feature.values[JUDGE_FEATURE] = value
            result = decide(claim.id, feature, self.calibration, judge=verdict, quote=quote)
            if self.uses_judge and not self.calibration.judge:
                result = overrule_by_judge(result, feature, value, quote)
            decided.append(result)
        checked = iter(decided)
        return [
            next(checked)
            if not r
            else ClaimVerdict(id=c.id, verdict="not_enough_info", score=0.0, evidence=[], reason=r)
            for c, r in zip(claims, reasons)
        ]


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
