"""Draft revisions: the refinement loop between the writer and the verifier.

A claim the fact checks did not support goes back to the strong tier with its verdict,
the verifier's reason and the evidence; the model revises the sentence or withdraws it,
and the revision is verified again like any claim. The loop is capped at
`max_refinement_rounds`; every round is a row here, so a person can read what was
tried and why it failed. A claim still unsupported at the cap (or withdrawn) is never
published: its cited evidence sentence may stand in, marked `extractive` and verified like any claim
(with a tiny local model most revisions fail, and this keeps the digest useful), and
otherwise it is dropped and counted.

Refinement is spent where it can help. A sentence that asserts nothing checkable (a fragment)
is dropped, not revised: no rewording makes it a claim. And a run's revision requests are
capped at `refinement_calls_per_drafting_call` times its drafting requests, so a writer whose
claims mostly fail cannot turn one run into hundreds of calls; a claim the cap leaves unrefined
is dropped and counted (`capped` rows), never published unverified.

The answer schema is built per request so that a grammar-constrained server can only write a
valid revision (`revision_answer_schema`); an answer still invalid after one re-ask is not sent
again in the next round (it would come back the same): its evidence stands in at once.
"""

import functools
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
    asset_check,
)
from pydantic import BaseModel, Field, model_validator

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.check_results import share_within_limit
from assets.digest.drafts import DraftClaim, EvidenceItem, numbered_evidence
from assets.digest.fact_checks import VERIFIER_VERSION, FactCheck
from assets.digest.retrieval import IndexManifest
from resources import ModelResource, ModelSession, StructuredOutputError, VectorStoreResource
from resources.documents.text import normalize
from resources.guardrails.prompt_injection import data_block, neutralize
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import PipelineConfig
from resources.prompts import load_prompt
from resources.tables import from_frame, to_frame
from resources.verification.claim_verification import Claim, ClaimVerifier
from resources.verification.sentence_checks import SentenceCheck, check_sentences

GROUP = "drafts"
HERE = Path(__file__).parent
PROMPT = load_prompt(HERE, "revise_claim")
CODE_VERSION = f"2-{PROMPT.version}-{VERIFIER_VERSION}"
Outcome = Literal["model", "revised", "extractive", "withdrawn", "unsupported", "duplicate"]


MAX_REVISION_CHARS = 400
MIN_REVISION_CHARS = 8
MAX_REVISION_CITATIONS = 4
REVISION_REASKS = 1


class ClaimRevision(BaseModel):
    """The reviser's answer. The schema the provider sees is the per-request one of `revision_within`;
    this model parses any provider's answer, so a withdrawal may leave out the other fields."""

    # Once the grammar holds the answer to its schema, what is left invalid (an answer cut off at
    # max_tokens) comes back the same when asked again at temperature 0: one re-ask, not the
    # gateway's default, then the claim goes to its extractive stand-in.
    max_reasks: ClassVar[int] = REVISION_REASKS

    action: Literal["revise", "withdraw"]
    sentence: str = Field(
        default="", max_length=MAX_REVISION_CHARS, description="The revised sentence ('' when withdrawn)."
    )
    evidence: list[int] = Field(
        default=[],
        max_length=MAX_REVISION_CITATIONS,
        description="Numbers of the evidence items it rests on ([] when withdrawn).",
    )


def revision_answer_schema(count: int) -> dict[str, Any]:
    """The JSON schema sent with a revision request that shows `count` evidence items: either a revision
    (a sentence of bounded length citing one to four of the numbers 1..count) or a withdrawal.

    Every bound is in a form llama.cpp's JSON-schema grammar enforces (`anyOf` of `const` actions,
    `enum`, `minItems`/`maxItems`, `minLength`/`maxLength`), so the embedded model can only write a
    valid answer: with a free `evidence` list it cited nothing 63 times in 74 calls, and no re-ask
    fixed it. Numeric `minimum`/`maximum` are avoided: llama.cpp does not hold numbers to them."""
    withdraw = {
        "type": "object",
        "title": "Withdrawal",
        "properties": {"action": {"const": "withdraw"}},
        "required": ["action"],
        "additionalProperties": False,
    }
    if count < 1:  # nothing to cite: withdrawing is the only valid answer
        return {"title": "ClaimRevision", **withdraw}
    revise = {
        "type": "object",
        "title": "Revision",
        "properties": {
            "action": {"const": "revise"},
            "sentence": {
                "type": "string",
                "minLength": MIN_REVISION_CHARS,
                "maxLength": MAX_REVISION_CHARS,
                "description": "The revised sentence.",
            },
            "evidence": {
                "type": "array",
                "items": {"type": "integer", "enum": list(range(1, count + 1))},
                "minItems": 1,
                "maxItems": MAX_REVISION_CITATIONS,
                "description": "Numbers of the evidence items it rests on.",
            },
        },
        "required": ["action", "sentence", "evidence"],
        "additionalProperties": False,
    }
    return {"title": "ClaimRevision", "anyOf": [revise, withdraw]}


@functools.cache
def revision_within(count: int) -> type[ClaimRevision]:
    """The revision schema for one request: a revision cites one to four of items 1..count, in the
    JSON schema the provider sees (`revision_answer_schema`) and in validation alike."""

    class ClaimRevision(RevisionSchema):  # noqa: F811 - the schema name the provider sees
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return revision_answer_schema(count)

        @model_validator(mode="after")
        def _cites_listed_items(self) -> "ClaimRevision":
            if self.action == "revise":
                if len(self.sentence.strip()) < MIN_REVISION_CHARS:
                    raise ValueError(f"a revision needs a sentence of at least {MIN_REVISION_CHARS} characters")
                unknown = [n for n in self.evidence if not 1 <= n <= count]
                if not self.evidence or unknown:
                    raise ValueError(f"cite one to four evidence items from 1 to {count}; got {self.evidence}")
            return self

    return ClaimRevision


RevisionSchema = ClaimRevision


class RevisionRound(BaseModel):
    claim_id: str
    draft_id: str
    topic: str
    round: int = Field(description="1..max_refinement_rounds; the extractive stand-in comes one round after the cap.")
    action: str = Field(
        description="revise, withdraw, extractive, failed (the model call failed) or capped (not sent: the run's "
        "refinement calls reached their cap)"
    )
    before: str
    after: str = Field(description="The revised sentence ('' when withdrawn or failed).")
    verdict: str = Field(description="The verifier's verdict on `after` ('' when there was nothing to verify).")
    reason: str
    quote: str = ""
    score: float = 0.0
    cited_chunk_ids: list[str] = []
    evidence_chunk_ids: list[str] = []
    evidence_sentence: str = ""
    contested: bool = False
    trace_id: str = ""


class PublishableClaim(BaseModel):
    """A claim as it may reach a summary: supported, uncontested, with its final text and evidence."""

    claim_id: str
    topic: str
    text: str
    origin: str = Field(description="model, revised or extractive")
    verdict: str
    score: float
    evidence_chunk_ids: list[str]
    evidence_sentence: str
    quote: str = ""


def _accepted(verdict: str, contested: bool) -> bool:
    return verdict == "supported" and not contested


def _publishable(check: FactCheck, judged: FactCheck | RevisionRound, text: str, origin: str) -> PublishableClaim:
    """The claim as published: its final text, and the verdict and evidence that text was judged on."""
    return PublishableClaim(
        claim_id=check.claim_id,
        topic=check.topic,
        text=text,
        origin=origin,
        verdict=judged.verdict,
        score=judged.score,
        evidence_chunk_ids=judged.evidence_chunk_ids,
        evidence_sentence=judged.evidence_sentence,
        quote=judged.quote,
    )


def outcomes(
    checks: Sequence[FactCheck], revisions: Sequence[RevisionRound]
) -> tuple[list[PublishableClaim], dict[str, Outcome]]:
    """What became of each drafted claim, and the claims that may be published (one per distinct text per topic)."""
    last: dict[str, RevisionRound] = {}
    withdrawn: set[str] = set()
    for row in sorted(revisions, key=lambda r: r.round):
        last[row.claim_id] = row
        if row.action == "withdraw":
            withdrawn.add(row.claim_id)
    published: list[PublishableClaim] = []
    fate: dict[str, Outcome] = {}
    seen: set[tuple[str, str]] = set()
    for check in checks:
        final = last.get(check.claim_id)  # a capped or unrefinable claim has no accepted revision: unsupported
        if _accepted(check.verdict, check.contested):
            claim = _publishable(check, check, check.claim, "extractive" if check.origin == "extractive" else "model")
        elif final is not None and final.after and _accepted(final.verdict, final.contested):
            claim = _publishable(check, final, final.after, "extractive" if final.action == "extractive" else "revised")
        else:
            fate[check.claim_id] = "withdrawn" if check.claim_id in withdrawn else "unsupported"
            continue
        key = (claim.topic, normalize(claim.text))
        if key in seen:
            fate[check.claim_id] = "duplicate"
            continue
        seen.add(key)
        fate[check.claim_id] = claim.origin  # type: ignore[assignment]
        published.append(claim)
    return published, fate


def revision_messages(
    topic: str, check: FactCheck | RevisionRound, text: str, evidence: list[EvidenceItem]
) -> list[dict[str, str]]:
    return [
        {
            "role": "user",
            "content": PROMPT.render(
                topic=topic.replace("{", "(").replace("}", ")"),
                verdict=check.verdict or "not checked",
                reason=neutralize(check.reason).replace("{", "(").replace("}", ")"),
                claim=data_block("claim", text),
                evidence=data_block("evidence", numbered_evidence(evidence)),
            ),
        }
    ]


MAX_REVISION_EVIDENCE = 6


def evidence_for(draft: DraftClaim, check: FactCheck) -> list[EvidenceItem]:
    """What the reviser sees, renumbered from 1: the items the claim cited, the sentence the verifier
    judged against, then the rest of the draft's list, at most MAX_REVISION_EVIDENCE (prompts stay short)."""
    cited = [i for i in draft.evidence_list if i.number in draft.evidence_numbers]
    judged = []
    if (
        check.evidence_sentence
        and check.evidence_chunk_ids
        and all(i.sentence != check.evidence_sentence for i in cited)
    ):
        chunk_id = check.evidence_chunk_ids[0]
        judged = [
            EvidenceItem(
                number=0, chunk_id=chunk_id, doc_id=chunk_id.rsplit("-", 1)[0], sentence=check.evidence_sentence
            )
        ]
    rest = [
        i
        for i in draft.evidence_list
        if i.number not in draft.evidence_numbers and i.sentence != check.evidence_sentence
    ]
    chosen = (cited + judged + rest)[:MAX_REVISION_EVIDENCE]
    return [item.model_copy(update={"number": n}) for n, item in enumerate(chosen, start=1)]


class _Pending(BaseModel):
    draft: DraftClaim
    text: str
    state: FactCheck | RevisionRound
    evidence: list[EvidenceItem]


def refine(
    drafts: Sequence[DraftClaim],
    checks: Sequence[FactCheck],
    *,
    llm: ModelSession,
    verifier: ClaimVerifier,
    rounds: int,
    decompose: bool,
    max_calls: int | None = None,
) -> list[RevisionRound]:
    """Every round of revision for the claims that failed, then extractive stand-ins for those still failing
    or withdrawn: the model gave up its wording, not the evidence it cited, which is verified like any claim.
    Fragments are not revised; past `max_calls` revision requests, the claims left get a `capped` row."""
    by_id = {d.claim_id: d for d in drafts}
    pending = [
        _Pending(draft=by_id[c.claim_id], text=c.claim, state=c, evidence=evidence_for(by_id[c.claim_id], c))
        for c in checks
        if c.claim_id in by_id and c.verdict != "supported" and c.refinable
    ]
    rows: list[RevisionRound] = []
    withdrawn: list[_Pending] = []
    calls = 0
    for number in range(1, rounds + 1):
        if max_calls is not None and len(pending) > max_calls - calls:
            allowed = max(max_calls - calls, 0)
            rows += [capped_row(item, number, max_calls) for item in pending[allowed:]]
            pending = pending[:allowed]
        if not pending:
            break
        calls += len(pending)
        answers: dict[int, tuple[ClaimRevision | Exception, str]] = {}
        groups: dict[int, list[int]] = defaultdict(list)
        for index, item in enumerate(pending):
            groups[len(item.evidence)].append(index)
        for count, indexes in groups.items():
            traced = llm.map_traced_structured(
                [
                    revision_messages(pending[i].draft.topic, pending[i].state, pending[i].text, pending[i].evidence)
                    for i in indexes
                ],
                revision_within(count),
                tier="strong",
                max_tokens=300,
            )
            answers.update(zip(indexes, traced))
        revised = [(i, a) for i, (a, _) in answers.items() if isinstance(a, ClaimRevision) and a.action == "revise"]
        claims = [
            Claim(
                id=f"{pending[i].draft.claim_id}-r{number}",
                text=a.sentence.strip(),
                cited_chunk_ids=list(dict.fromkeys(pending[i].evidence[n - 1].chunk_id for n in a.evidence)),
            )
            for i, a in revised
        ]
        verdicts = dict(
            zip(
                (i for i, _ in revised),
                zip(claims, check_sentences(verifier, claims, llm=llm, decompose=decompose)),
            )
        )
        still: list[_Pending] = []
        for index, item in enumerate(pending):
            answer, trace_id = answers[index]
            base = {**_round_of(item, number), "trace_id": trace_id}
            if isinstance(answer, StructuredOutputError):
                # The same request would get the same invalid answer next round: its evidence stands in now.
                row = _unverified_row(base, "failed", f"answer stayed invalid: {answer}")
                withdrawn.append(item)
            elif isinstance(answer, Exception):
                row = _unverified_row(base, "failed", f"model call failed: {answer}")
                still.append(item)
            elif answer.action == "withdraw":
                row = _unverified_row(base, "withdraw", "withdrawn by the model")
                withdrawn.append(item)
            else:
                claim, check = verdicts[index]
                row = _round_row(base, "revise", claim, check)
                if not _accepted(check.verdict, check.contested):
                    still.append(_Pending(draft=item.draft, text=claim.text, state=row, evidence=item.evidence))
            rows.append(row)
        pending = still
    rows += extractive_stand_ins(pending + withdrawn, rounds + 1, verifier=verifier, llm=llm, decompose=decompose)
    return rows


def _round_of(item: _Pending, number: int) -> dict[str, Any]:
    """What every row of a claim's round starts from: the claim, the round and the text it revises."""
    return {
        "claim_id": item.draft.claim_id,
        "draft_id": item.draft.draft_id,
        "topic": item.draft.topic,
        "round": number,
        "before": item.text,
    }


def capped_row(item: _Pending, number: int, cap: int) -> RevisionRound:
    return _unverified_row(
        _round_of(item, number),
        "capped",
        f"not refined: the run's refinement calls reached their cap of {cap}; dropped",
    )


def refinement_call_cap(drafts: Sequence[DraftClaim], per_drafting_call: float) -> int:
    """The run's revision requests allowed: a multiple of its drafting requests (one per draft)."""
    return int(per_drafting_call * len({d.draft_id for d in drafts}))


def _unverified_row(base: dict[str, Any], action: str, reason: str) -> RevisionRound:
    """A round that left no sentence to verify: the call failed, the model withdrew, or the cap held it back."""
    return RevisionRound(**base, action=action, after="", verdict="", reason=reason)


def _round_row(base: dict[str, Any], action: str, claim: Claim, check: SentenceCheck) -> RevisionRound:
    """A round whose sentence was verified: the verdict and the evidence it was judged on."""
    return RevisionRound(
        **base,
        action=action,
        after=claim.text,
        verdict=check.verdict,
        reason=check.reason,
        quote=check.quote,
        score=check.score,
        cited_chunk_ids=claim.cited_chunk_ids,
        evidence_chunk_ids=check.evidence_chunk_ids,
        evidence_sentence=check.evidence_sentence,
        contested=check.contested,
    )


def extractive_stand_ins(
    pending: Sequence[_Pending],
    number: int,
    *,
    verifier: ClaimVerifier,
    llm: ModelSession,
    decompose: bool,
) -> list[RevisionRound]:
    """After the cap: the first cited evidence sentence stands in for the claim, verified like any claim."""
    usable = [p for p in pending if p.draft.evidence_sentence and p.draft.cited_chunk_ids]
    claims = [
        Claim(id=f"{p.draft.claim_id}-x", text=p.draft.evidence_sentence, cited_chunk_ids=p.draft.cited_chunk_ids[:1])
        for p in usable
    ]
    checks = check_sentences(verifier, claims, llm=llm, decompose=decompose)
    return [
        _round_row(_round_of(p, number), "extractive", claim, check) for p, claim, check in zip(usable, claims, checks)
    ]


@asset(
    **PipelineAssetSpec(
        group=GROUP,
        code_version=CODE_VERSION,
        rows=RevisionRound,
        kinds={"openai", "chroma"},
        calls_model=True,
        metadata={"prompt_version": PROMPT.version},
    ).asset_keywords()
)
def draft_revisions(
    context: AssetExecutionContext,
    pipeline: PipelineConfig,
    model: ModelResource,
    vector_store: VectorStoreResource,
    retrieval_index: IndexManifest,
    drafts: pd.DataFrame,
    fact_checks: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """Every refinement round of the claims the fact checks did not support: before, after, verdict and reason."""
    claims = from_frame(drafts, DraftClaim)
    checks = from_frame(fact_checks, FactCheck)
    cap = refinement_call_cap(claims, pipeline.refinement_calls_per_drafting_call)
    with model.session(context) as llm:
        verifier = ClaimVerifier(vector_store, retrieval_index.collection, llm=llm)
        rows = refine(
            claims,
            checks,
            llm=llm,
            verifier=verifier,
            rounds=pipeline.max_refinement_rounds,
            decompose=pipeline.decompose_claims,
            max_calls=cap,
        )
    published, fate = outcomes(checks, rows)
    counts = Counter(fate.values())
    total = len(checks)
    context.log.info(f"Refined {len({r.claim_id for r in rows})} claims in {len(rows)} rounds: {dict(counts)}")
    return Output(
        to_frame(rows, RevisionRound),
        metadata={
            "claims": total,
            "rounds": len(rows),
            "claims_sent_to_refinement": sum(c.verdict != "supported" and c.refinable for c in checks),
            "refinement_calls": sum(r.action in ("revise", "withdraw", "failed") for r in rows),
            "refinement_call_cap": cap,
            "drafting_calls": len({c.draft_id for c in claims}),
            "not_refined_capped": len({r.claim_id for r in rows if r.action == "capped"}),
            "not_refined_fragments": sum(c.verdict != "supported" and not c.refinable for c in checks),
            **{
                f"{kind}_claims": counts[kind]
                for kind in ("model", "revised", "extractive", "withdrawn", "unsupported", "duplicate")
            },
            "dropped_claims": counts["withdrawn"] + counts["unsupported"],
            "publishable_claims": len(published),
            "supported_share_before_refinement": round(sum(c.verdict == "supported" for c in checks) / total, 3)
            if total
            else 0.0,
            "supported_share_after_refinement": round(
                sum(counts[k] for k in ("model", "revised", "extractive", "duplicate")) / total, 3
            )
            if total
            else 0.0,
            "max_refinement_rounds": pipeline.max_refinement_rounds,
            "preview": MetadataValue.md(
                markdown_table(
                    [
                        {
                            "round": r.round,
                            "action": r.action,
                            "verdict": r.verdict,
                            "before": r.before,
                            "after": r.after,
                        }
                        for r in rows[:15]
                    ]
                )
                if rows
                else "_(every claim was supported as written)_"
            ),
        },
    )


@asset_check(
    asset=draft_revisions,
    blocking=True,
    additional_ins={"fact_checks": AssetIn("fact_checks")},
    description="After refinement, the share of drafted claims that is still unsupported (withdrawn or failing at "
    "the cap) stays at or below max_unsupported_share, and at least one claim can be published.",
)
def unsupported_after_refinement_within_limit(
    pipeline: PipelineConfig, draft_revisions: pd.DataFrame, fact_checks: pd.DataFrame
) -> AssetCheckResult:
    checks = from_frame(fact_checks, FactCheck)
    published, fate = outcomes(checks, from_frame(draft_revisions, RevisionRound))
    dropped = [c for c in checks if fate.get(c.claim_id) in ("withdrawn", "unsupported")]
    return share_within_limit(
        len(dropped),
        len(checks),
        pipeline.max_unsupported_share,
        blocking=True,
        description=f"{len(dropped)} of {len(checks)} claims still unsupported after refinement ({{share:.0%}}); "
        f"{len(published)} publishable",
        share_key="unsupported_share",
        limit_key="max_unsupported_share",
        empty_passes=False,
        requires=bool(published),
        metadata={
            "publishable_claims": len(published),
            "dropped_claims": MetadataValue.md(
                markdown_table([{"outcome": fate[c.claim_id], "claim": c.claim} for c in dropped[:10]])
                if dropped
                else "_none_"
            ),
        },
    )
