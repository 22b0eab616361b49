"""Sentence checks: a written sentence verified through its atomic claims.

A model's sentence often fuses several facts ("X raised 40 million and will open a
plant in Porto"); a verifier that judges the whole can be carried by the part that
holds. With decomposition on, the fast tier splits each sentence into atomic claims,
each is verified on its own, and the sentence is supported only when all of them are.
A split counts only when its parts are standalone propositions that together cover the
sentence (`resources.verification.atomic_claims`): a split into fragments is re-asked once, with what was
wrong, and otherwise the sentence is verified whole, so a fragment never sinks a sentence.
Drafts, revisions and summaries all go through this one gate, so whatever is published
was judged the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, Field

from resources import ModelSession
from resources.documents.text import normalize
from resources.guardrails.prompt_injection import data_block
from resources.prompts import load_prompt
from resources.verification.atomic_claims import split_problem
from resources.verification.claim_verification import Claim, ClaimVerdict, ClaimVerifier

HERE = Path(__file__).parent
DECOMPOSE_PROMPT = load_prompt(HERE, "decompose_claim")
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
    split_note: str = Field(default="", description="Why the model's split was not used, when it was not.")
    judge: str = Field(default="", description="The judge's verdict as answered (of the deciding claim).")
    judge_counted: bool = Field(default=False, description="Whether the judge's answer took part in the decision.")
    judge_note: str = Field(default="", description="Why the judge's answer was set aside or not counted.")
    refinable: bool = Field(
        default=True, description="False when rewording cannot help: the sentence itself asserts nothing checkable."
    )


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
        judge=verdict.judge,
        judge_counted=verdict.judge_counted,
        judge_note=verdict.judge_note,
        refinable=not verdict.fragment,
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
            judge=", ".join(dict.fromkeys(c.judge for c in checks if c.judge)),
            judge_counted=any(c.judge_counted for c in checks),
            judge_note="; ".join(c.judge_note for c in checks if c.judge_note),
        )
    text, worst = min(failing, key=lambda p: (p[1].verdict != "refuted", p[1].score))
    check = _from_verdict(worst)
    check.reason = f"atomic claim {text!r}: {check.reason}"
    check.atomic_claims = [t for t, _ in parts]
    return check


def split_messages(sentence: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": DECOMPOSE_PROMPT.render(claim=data_block("claim", sentence))}]


def reask_messages(sentence: str, answer: AtomicClaims, problem: str) -> list[dict[str, str]]:
    """The split request again, with the rejected answer and what was wrong with it."""
    return [
        *split_messages(sentence),
        {"role": "assistant", "content": answer.model_dump_json()},
        {
            "role": "user",
            "content": f"That split is not usable: {problem}. Each claim must be a full sentence with a subject "
            "and a verb, and together they must say everything the sentence says. Answer again.",
        },
    ]


def _parts(answer: object) -> list[str]:
    if not isinstance(answer, AtomicClaims):
        return []
    return list(dict.fromkeys(c.strip() for c in answer.claims if c.strip()))


def _problem(sentence: str, answer: object) -> str:
    """What is wrong with a split answer ("" when usable, failed or the sentence returned as is:
    those are verified whole without asking again)."""
    parts = _parts(answer)
    if not parts or [normalize(p) for p in parts] == [normalize(sentence)]:
        return ""
    return split_problem(sentence, parts)


def atomic_claims_of(sentences: Sequence[Claim], llm: ModelSession) -> list[tuple[list[str], str]]:
    """Per sentence, its atomic claims (the sentence alone when the split is unusable) and why a
    split was not used. An invalid split is asked for once more, with the problem named."""
    answers = llm.map_structured([split_messages(s.text) for s in sentences], AtomicClaims, tier="fast", max_tokens=300)
    problems = [_problem(s.text, a) for s, a in zip(sentences, answers)]
    again = [i for i, problem in enumerate(problems) if problem]
    retried = llm.map_structured(
        [reask_messages(sentences[i].text, answers[i], problems[i]) for i in again],  # type: ignore[arg-type]
        AtomicClaims,
        tier="fast",
        max_tokens=300,
    )
    for i, answer in zip(again, retried):
        answers[i] = answer
        problems[i] = _problem(sentences[i].text, answer)
    out: list[tuple[list[str], str]] = []
    for sentence, answer, problem in zip(sentences, answers, problems):
        parts = _parts(answer)
        if not parts:
            failed = isinstance(answer, Exception)
            out.append(
                ([sentence.text], "verified whole: " + ("the split request failed" if failed else "empty split"))
            )
        elif problem:
            out.append(([sentence.text], f"verified whole: the split was invalid twice ({problem})"))
        else:
            out.append((parts, ""))
    return out


def check_sentences(
    verifier: ClaimVerifier,
    sentences: Sequence[Claim],
    *,
    llm: ModelSession | None = None,
    decompose: bool = False,
) -> list[SentenceCheck]:
    """One check per sentence; with `decompose`, each split by the fast tier first (a split that is
    invalid after one re-ask, or failed, verifies the sentence whole)."""
    if not sentences:
        return []
    splits: list[tuple[list[str], str]] = [([s.text], "") for s in sentences]
    if decompose and llm is not None:
        splits = atomic_claims_of(sentences, llm)
    flat = [
        Claim(id=f"{s.id}#{n}" if len(texts) > 1 else s.id, text=text, cited_chunk_ids=s.cited_chunk_ids)
        for s, (texts, _) in zip(sentences, splits)
        for n, text in enumerate(texts)
    ]
    verdicts = iter(verifier.verify(flat))
    checks = []
    for texts, note in splits:
        check = combine([(text, next(verdicts)) for text in texts])
        check.split_note = note
        checks.append(check)
    return checks
