"""Sentence checks: a written sentence verified through its atomic claims.

A model's sentence often fuses several facts ("X raised 40 million and will open a
plant in Porto"); a verifier that judges the whole can be carried by the part that
holds. With decomposition on, the fast tier splits each sentence into atomic claims,
each is verified on its own, and the sentence is supported only when all of them are.
Drafts, revisions and summaries all go through this one gate, so whatever is published
was judged the same way.
"""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, Field

from assets.claim_verification import Claim, ClaimVerdict, ClaimVerifier
from assets.prompts import load_prompt
from resources import CallLedger, ModelResource
from resources.prompt_injection import data_block

DECOMPOSE_PROMPT = load_prompt("decompose_claim")
MAX_ATOMIC_CLAIMS = 6


class AtomicClaims(BaseModel):
    claims: list[str] = Field(min_length=1, max_length=MAX_ATOMIC_CLAIMS)


class SentenceCheck(BaseModel):
    """The verdict on one written sentence, with what it rests on and why."""

    verdict: str = Field(description="supported, refuted or not_enough_info")
    score: float = 0.0
    evidence_chunk_ids: list[str] = []
    evidence_sentence: str = ""
    quote: str = Field(default="", description="The judge's verbatim quote from the evidence, when it gave one.")
    reason: str = ""
    contested: bool = False
    conflicting_chunk_ids: list[str] = []
    conflict: str = ""
    atomic_claims: list[str] = Field(default=[], description="The atomic claims it was split into (empty: not split).")


def reason_for(verdict: ClaimVerdict) -> str:
    """The verifier's own reason when it gives one, else one built from its fields."""
    given = str(getattr(verdict, "reason", "") or "")
    if given:
        return given
    if verdict.verdict == "refuted":
        return f"contradicted by the evidence ({verdict.conflict or 'conflicting facts'})"
    if verdict.verdict == "not_enough_info":
        return "no evidence sentence in the index states this"
    return "stated by the evidence"


def _from_verdict(verdict: ClaimVerdict) -> SentenceCheck:
    return SentenceCheck(
        verdict=verdict.verdict,
        score=verdict.score,
        evidence_chunk_ids=list(verdict.evidence),
        evidence_sentence=verdict.evidence_sentence,
        quote=str(getattr(verdict, "quote", "") or ""),
        reason=reason_for(verdict),
        contested=verdict.contested,
        conflicting_chunk_ids=list(verdict.conflicting_chunk_ids),
        conflict=verdict.conflict,
    )


def combine(parts: Sequence[tuple[str, ClaimVerdict]]) -> SentenceCheck:
    """A sentence is supported only when every atomic claim is; otherwise the worst part decides."""
    if len(parts) == 1:
        return _from_verdict(parts[0][1])
    failing = [(t, v) for t, v in parts if v.verdict != "supported"]
    if not failing:
        checks = [_from_verdict(v) for _, v in parts]
        return SentenceCheck(
            verdict="supported",
            score=round(min(c.score for c in checks), 4),
            evidence_chunk_ids=list(dict.fromkeys(i for c in checks for i in c.evidence_chunk_ids)),
            evidence_sentence=" ".join(dict.fromkeys(c.evidence_sentence for c in checks if c.evidence_sentence)),
            quote=" … ".join(c.quote for c in checks if c.quote),
            reason="every atomic claim is stated by the evidence",
            contested=any(c.contested for c in checks),
            conflicting_chunk_ids=list(dict.fromkeys(i for c in checks for i in c.conflicting_chunk_ids)),
            conflict="; ".join(c.conflict for c in checks if c.conflict),
            atomic_claims=[t for t, _ in parts],
        )
    text, worst = min(failing, key=lambda p: (p[1].verdict != "refuted", p[1].score))
    check = _from_verdict(worst)
    check.reason = f"atomic claim {text!r}: {check.reason}"
    check.atomic_claims = [t for t, _ in parts]
    return check


def check_sentences(
    verifier: ClaimVerifier,
    sentences: Sequence[Claim],
    *,
    model: ModelResource | None = None,
    decompose: bool = False,
    ledger: CallLedger | None = None,
) -> list[SentenceCheck]:
    """One check per sentence; with `decompose`, each split by the fast tier first (a failed split verifies the whole)."""
    if not sentences:
        return []
    parts: list[list[str]] = [[s.text] for s in sentences]
    if decompose and model is not None:
        answers = model.map_structured(
            [
                [{"role": "user", "content": DECOMPOSE_PROMPT.render(claim=data_block("claim", s.text))}]
                for s in sentences
            ],
            AtomicClaims,
            tier="fast",
            max_tokens=300,
            ledger=ledger,
        )
        for index, answer in enumerate(answers):
            if isinstance(answer, AtomicClaims):
                atomic = [c.strip() for c in answer.claims if c.strip()]
                if atomic:
                    parts[index] = list(dict.fromkeys(atomic))
    flat = [
        Claim(id=f"{s.id}#{n}" if len(texts) > 1 else s.id, text=text, cited_chunk_ids=s.cited_chunk_ids)
        for s, texts in zip(sentences, parts)
        for n, text in enumerate(texts)
    ]
    verdicts = iter(verifier.verify(flat))
    return [combine([(text, next(verdicts)) for text in texts]) for texts in parts]
