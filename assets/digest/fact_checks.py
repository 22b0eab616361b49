"""Fact checks: every claim of every draft, verified against evidence in the index.

This is the verdict before refinement: the model's sentences as written. Claims that
fail here go to the refinement loop (`draft_revisions`); the share supported here is
the "before" figure a person compares with the share after refinement. The metadata says
how far the judge model was trusted and why: its balanced accuracy on the labelled
calibration sample, against the classifier's, and the configuration it counts in.
"""

from collections import Counter

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
    asset_check,
)
from pydantic import BaseModel, Field

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.automation import when_index_changes
from assets.components.check_results import share_within_limit
from assets.digest.drafts import DraftClaim
from assets.digest.retrieval import IndexManifest
from resources import ModelResource, VectorStoreResource
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import PipelineConfig
from resources.tables import from_frame, to_frame
from resources.verification import verifier_version
from resources.verification.claim_verification import Claim, ClaimVerifier
from resources.verification.sentence_checks import DECOMPOSE_PROMPT, SentenceCheck, check_sentences

GROUP = "fact_checks"


VERIFIER_VERSION = verifier_version()
CODE_VERSION = f"2-{DECOMPOSE_PROMPT.version}-{VERIFIER_VERSION}"


class FactCheck(BaseModel):
    claim_id: str
    draft_id: str
    topic: str
    claim: str
    verdict: str = Field(description="supported, refuted or not_enough_info")
    score: float
    evidence_chunk_ids: list[str]
    evidence_sentence: str
    contested: bool = Field(description="Supported, but another indexed sentence contradicts it.")
    conflicting_chunk_ids: list[str]
    conflict: str
    index_version: str
    quote: str = Field(default="", description="The judge's verbatim quote from the evidence, when it gave one.")
    reason: str = Field(default="", description="Why the verifier decided so; fed back to the model when it fails.")
    atomic_claims: list[str] = Field(default=[], description="The atomic claims the sentence was split into.")
    split_note: str = Field(default="", description="Why the model's split was not used, when it was not.")
    judge: str = Field(default="", description="The judge's verdict as answered, whether or not it counted.")
    judge_counted: bool = Field(default=False, description="Whether the judge's answer took part in the verdict.")
    judge_note: str = Field(default="", description="Why the judge's answer was set aside or not counted.")
    refinable: bool = Field(
        default=True, description="False when rewording cannot help: the sentence asserts nothing checkable."
    )
    origin: str = Field(default="model", description="The draft claim's origin: model or extractive.")


def fact_check_rows(claims: list[DraftClaim], checks: list[SentenceCheck], index_version: str) -> list[FactCheck]:
    """A row per claim: which claim it is, beside every field of its sentence check (a row holds them all)."""
    return [
        FactCheck(
            claim_id=c.claim_id,
            draft_id=c.draft_id,
            topic=c.topic,
            claim=c.text,
            index_version=index_version,
            origin=c.origin,
            **v.model_dump(),
        )
        for c, v in zip(claims, checks)
    ]


@asset(
    **PipelineAssetSpec(
        group=GROUP,
        code_version=CODE_VERSION,
        rows=FactCheck,
        kinds={"openai", "chroma"},
        calls_model=True,
        automation_condition=when_index_changes("retrieval_index"),
    ).asset_keywords()
)
def fact_checks(
    context: AssetExecutionContext,
    model: ModelResource,
    vector_store: VectorStoreResource,
    retrieval_index: IndexManifest,
    pipeline: PipelineConfig,
    drafts: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """A verdict for every drafted claim (supported / refuted / not enough info) with cited evidence and a score."""
    claims = from_frame(drafts, DraftClaim)
    with model.session(context) as llm:
        verifier = ClaimVerifier(vector_store, retrieval_index.collection, llm=llm)
        verdicts = check_sentences(
            verifier,
            [Claim(id=c.claim_id, text=c.text, cited_chunk_ids=c.cited_chunk_ids) for c in claims],
            llm=llm,
            decompose=pipeline.decompose_claims,
        )
        judge = judge_metadata(verifier) if claims else {"judge_mode": "no claims"}
    rows = fact_check_rows(claims, verdicts, retrieval_index.version)
    counts = Counter(r.verdict for r in rows)
    context.log.info(f"Verified {len(rows)} claims: {dict(counts)}")
    return Output(
        to_frame(rows, FactCheck),
        metadata={
            "claims": len(rows),
            "supported": counts["supported"],
            "refuted": counts["refuted"],
            "not_enough_info": counts["not_enough_info"],
            "contested": sum(r.contested for r in rows),
            "supported_share_before_refinement": round(counts["supported"] / len(rows), 3) if rows else 0.0,
            "decomposed_claims": sum(bool(r.atomic_claims) for r in rows),
            "splits_verified_whole": sum(
                r.split_note.startswith("verified whole: the split was invalid") for r in rows
            ),
            "judge_refutations_discarded": sum("refutation is discarded" in r.judge_note for r in rows),
            "judge_answers_not_counted": sum("not counted" in r.judge_note for r in rows),
            **judge,
            "index_version": retrieval_index.version,
            "verifier_version": VERIFIER_VERSION,
            "preview": MetadataValue.md(
                markdown_table(
                    [
                        {"verdict": r.verdict, "score": r.score, "claim": r.claim, "evidence": r.evidence_sentence}
                        for r in rows[:12]
                    ]
                )
            ),
        },
    )


def judge_metadata(verifier: ClaimVerifier) -> dict[str, object]:
    """How the judge counted in this run, and what its calibration measured."""
    if not verifier.uses_judge:
        return {"judge_mode": "no judge"}
    if verifier.judge_is_feature:
        return {
            "judge_mode": "feature",
            "judge_calibration": f"fitted with the judge on {verifier.calibration.fit_set}; it "
            + verifier.calibration.judge_reason,
        }
    calibration = verifier.judge_calibration()
    return {
        "judge_mode": calibration.mode,
        "judge_accuracy": calibration.judge_accuracy,
        "judge_classifier_accuracy": calibration.classifier_accuracy,
        "judge_accuracy_by_mode": MetadataValue.json(calibration.accuracy_by_mode),
        "judge_calibration_claims": calibration.claims,
        "judge_calibration": calibration.reason,
    }


@asset_check(
    asset=fact_checks,
    blocking=False,
    description="Warns when more than max_unsupported_share of the drafted claims are not supported as written. "
    "Not blocking: failed claims go to refinement, and draft_revisions blocks on what is still unsupported after it.",
)
def unsupported_share_within_limit(pipeline: PipelineConfig, fact_checks: pd.DataFrame) -> AssetCheckResult:
    total = len(fact_checks)
    unsupported = fact_checks[fact_checks["verdict"] != "supported"] if total else fact_checks
    return share_within_limit(
        len(unsupported),
        total,
        pipeline.max_unsupported_share,
        blocking=False,
        description=f"{len(unsupported)} of {total} claims are not supported ({{share:.0%}})",
        share_key="unsupported_share",
        limit_key="max_unsupported_share",
        empty_passes=False,
        metadata={
            "unsupported_claims": MetadataValue.md(
                markdown_table(unsupported[["verdict", "claim"]].head(10).to_dict(orient="records"))
            ),
        },
    )
