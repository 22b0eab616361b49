"""Claim verification: the reusable fact-checking component.

A claim is judged against the individual sentences it could rest on, not whole
documents: candidate passages come from the claim's cited chunks plus a retrieval
query, are split into sentences, and each sentence is scored by embedding
similarity to the claim. A sentence that says nearly the same thing but with another
number or the opposite polarity counts against the claim rather than for it. A model
judge, when one is given, nudges the support score by a calibrated weight; a tiny
model alone is close to chance, so it never decides on its own.

The same code serves the `fact_checks` asset, Python callers and the
`ai-pipelines fact-check` command, on any corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

from assets.guardrails import neutralize
from assets.prompts import load_prompt
from assets.text import has_negation, numbers_in, split_sentences, words_in
from resources import CallLedger, ModelResource, VectorStoreResource

MIN_CLAIM_WORDS = 3
Verdict = Literal["supported", "refuted", "not_enough_info"]
PROMPT = load_prompt("verify_claim")
CALIBRATION_FILE = Path(__file__).parent / "calibration" / "fact_check.json"
_STOPWORDS = frozenset(
    "the a an of in on at to for and or by with from as is was were are be been its it that this "
    "has have had than which who will would per".split()
)


class Claim(BaseModel):
    id: str
    text: str = Field(min_length=1)
    cited_chunk_ids: list[str] = []


class Thresholds(BaseModel):
    """Decision thresholds; the defaults come from the calibration file bundled with the package."""

    support: float = 0.9
    refute: float = 0.86
    judge_weight: float = 0.0
    candidates: int = 6


class Calibration(BaseModel):
    thresholds: Thresholds
    dev_set: str = ""
    examples: int = 0
    accuracy: float = 0.0
    macro_f1: float = 0.0
    judge: bool = False


class JudgeAnswer(BaseModel):
    verdict: Verdict


class ClaimVerdict(BaseModel):
    id: str
    verdict: Verdict
    score: float = Field(description="Similarity of the deciding evidence sentence to the claim.")
    evidence: list[str] = Field(description="Chunk ids of the deciding evidence sentence(s).")
    evidence_sentence: str = ""
    support_score: float = 0.0
    refute_score: float = 0.0
    conflict: str = Field(default="", description="Why the refuting sentence conflicts (number, negation).")
    contested: bool = Field(default=False, description="Supported, but another sentence conflicts.")
    conflicting_chunk_ids: list[str] = []
    judge: str = ""


def load_calibration(path: Path = CALIBRATION_FILE) -> Calibration:
    if path.exists():
        return Calibration.model_validate_json(path.read_text())
    return Calibration(thresholds=Thresholds())


class _Sentence(BaseModel):
    chunk_id: str
    text: str


def content_words(text: str) -> set[str]:
    return {w for w in words_in(text) if w not in _STOPWORDS and not w.isdigit()}


def conflict_between(claim: str, sentence: str) -> str:
    """Why a sentence about the same thing contradicts the claim, or "" if it does not.

    Only sentences that share most of the claim's content words qualify: a different
    number in an unrelated sentence is not a contradiction.
    """
    claim_words = content_words(claim)
    if not claim_words or len(claim_words & content_words(sentence)) / len(claim_words) < 0.4:
        return ""
    claim_numbers, sentence_numbers = numbers_in(claim), numbers_in(sentence)
    if claim_numbers and sentence_numbers and not claim_numbers <= sentence_numbers:
        return "number"
    if has_negation(claim) != has_negation(sentence):
        return "negation"
    return ""


class Features(BaseModel):
    """What a decision is made from; kept so calibration can re-decide without re-embedding."""

    support_score: float
    support_sentence: _Sentence | None
    refute_score: float
    refute_sentence: _Sentence | None
    conflict: str
    judge: str = ""


def decide(claim_id: str, features: Features, thresholds: Thresholds) -> ClaimVerdict:
    bonus = {"supported": 1.0, "refuted": -1.0}.get(features.judge, 0.0) * thresholds.judge_weight
    support = features.support_score + bonus
    refuted = features.refute_score >= thresholds.refute
    if support >= thresholds.support and support >= features.refute_score:
        sentence = features.support_sentence
        return ClaimVerdict(
            id=claim_id,
            verdict="supported",
            score=round(support, 4),
            evidence=[sentence.chunk_id] if sentence else [],
            evidence_sentence=sentence.text if sentence else "",
            support_score=round(features.support_score, 4),
            refute_score=round(features.refute_score, 4),
            contested=refuted,
            conflicting_chunk_ids=[features.refute_sentence.chunk_id] if refuted and features.refute_sentence else [],
            conflict=features.conflict if refuted else "",
            judge=features.judge,
        )
    if refuted and features.refute_sentence:
        return ClaimVerdict(
            id=claim_id,
            verdict="refuted",
            score=round(features.refute_score, 4),
            evidence=[features.refute_sentence.chunk_id],
            evidence_sentence=features.refute_sentence.text,
            support_score=round(features.support_score, 4),
            refute_score=round(features.refute_score, 4),
            conflict=features.conflict,
            judge=features.judge,
        )
    best = features.support_sentence or features.refute_sentence
    return ClaimVerdict(
        id=claim_id,
        verdict="not_enough_info",
        score=round(max(support, features.refute_score), 4),
        evidence=[best.chunk_id] if best else [],
        evidence_sentence=best.text if best else "",
        support_score=round(features.support_score, 4),
        refute_score=round(features.refute_score, 4),
        judge=features.judge,
    )


class ClaimVerifier:
    """Verifies claims against one Chroma collection."""

    def __init__(
        self,
        vector_store: VectorStoreResource,
        collection: str,
        model: ModelResource | None = None,
        thresholds: Thresholds | None = None,
        ledger: CallLedger | None = None,
    ):
        self.vector_store = vector_store
        self.collection = collection
        self.model = model
        self.thresholds = thresholds or load_calibration().thresholds
        self.ledger = ledger or CallLedger()
        self._sentence_vectors: dict[str, np.ndarray] = {}

    def candidate_sentences(self, claims: Sequence[Claim]) -> list[list[_Sentence]]:
        queried = self.vector_store.query(
            self.collection, [c.text for c in claims], n_results=self.thresholds.candidates
        )
        cited = {h.id: h for h in self.vector_store.get(self.collection, sorted({i for c in claims for i in c.cited_chunk_ids}))}
        result = []
        for claim, hits in zip(claims, queried):
            passages = [cited[i] for i in claim.cited_chunk_ids if i in cited] + hits
            seen: set[str] = set()
            sentences = []
            for hit in passages:
                for span in split_sentences(hit.text):
                    if span.text not in seen:
                        seen.add(span.text)
                        sentences.append(_Sentence(chunk_id=hit.id, text=span.text))
            result.append(sentences)
        return result

    def _vectors(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._sentence_vectors]
        if missing:
            for text, vector in zip(missing, self.vector_store.embeddings.embed_queries(missing)):
                self._sentence_vectors[text] = vector
        return np.stack([self._sentence_vectors[t] for t in texts]) if texts else np.zeros((0, 1))

    def features(self, claims: Sequence[Claim]) -> list[Features]:
        if not claims:
            return []
        claim_vectors = self.vector_store.embeddings.embed_queries([c.text for c in claims])
        out = []
        for claim, vector, sentences in zip(claims, claim_vectors, self.candidate_sentences(claims)):
            support = (0.0, None)
            refute = (0.0, None, "")
            # A bare name or fragment asserts nothing that evidence could support or refute.
            if sentences and len(content_words(claim.text)) >= MIN_CLAIM_WORDS:
                similarities = self._vectors([s.text for s in sentences]) @ vector
                for sentence, similarity in zip(sentences, similarities.tolist()):
                    conflict = conflict_between(claim.text, sentence.text)
                    if conflict and similarity > refute[0]:
                        refute = (similarity, sentence, conflict)
                    elif not conflict and similarity > support[0] and numbers_in(claim.text) <= numbers_in(sentence.text):
                        support = (similarity, sentence)
            out.append(
                Features(
                    support_score=support[0],
                    support_sentence=support[1],
                    refute_score=refute[0],
                    refute_sentence=refute[1],
                    conflict=refute[2],
                )
            )
        if self.model is not None and self.thresholds.judge_weight:
            self._judge(claims, out)
        return out

    def _judge(self, claims: Sequence[Claim], features: list[Features]) -> None:
        pending = [(c, f) for c, f in zip(claims, features) if f.support_sentence is not None]
        assert self.model is not None
        answers = self.model.map_structured(
            [
                [{"role": "user", "content": PROMPT.render(claim=neutralize(c.text), evidence=neutralize(f.support_sentence.text))}]  # type: ignore[union-attr]
                for c, f in pending
            ],
            JudgeAnswer,
            tier="strong",
            max_tokens=20,
            ledger=self.ledger,
        )
        for (_, feature), answer in zip(pending, answers):
            feature.judge = answer.verdict if isinstance(answer, JudgeAnswer) else ""

    def verify(self, claims: Sequence[Claim]) -> list[ClaimVerdict]:
        return [decide(c.id, f, self.thresholds) for c, f in zip(claims, self.features(claims))]


def read_claims(path: Path) -> list[Claim]:
    """Claims from JSONL, one {"id", "text"} object a line; a bad line is an error naming the line."""
    claims = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            claims.append(Claim.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: not a claim object with 'id' and 'text': {exc}") from exc
    return claims
