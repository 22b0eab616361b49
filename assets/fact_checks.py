"""Fact checks: every claim of every draft, verified against evidence in the index."""


import hashlib
from collections import Counter

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
    asset_check,
)
from pydantic import BaseModel, Field

from assets.automation import when_index_changes
from assets.claim_verification import PROMPT, Claim, ClaimVerifier, load_calibration
from assets.config import PipelineConfig
from assets.drafts import DraftClaim
from assets.frames import from_frame, table_output, to_frame
from assets.metadata import MODEL_POOL, ledger_metadata
from assets.previews import markdown_table
from assets.retrieval import IndexManifest
from resources import CallLedger, ModelResource, VectorStoreResource

GROUP = "fact_checks"
CALIBRATION = load_calibration()
CODE_VERSION = f"1-{PROMPT.version}-{hashlib.sha256(CALIBRATION.thresholds.model_dump_json().encode()).hexdigest()[:8]}"


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


@asset(
    group_name=GROUP,
    code_version=CODE_VERSION,
    pool=MODEL_POOL,
    automation_condition=when_index_changes("retrieval_index"),
    **table_output(FactCheck, "openai", "chroma"),
)
def fact_checks(
    context: AssetExecutionContext,
    model: ModelResource,
    vector_store: VectorStoreResource,
    retrieval_index: IndexManifest,
    drafts: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """A verdict for every drafted claim (supported / refuted / not enough info) with cited evidence and a score."""
    claims = from_frame(drafts, DraftClaim)
    ledger = CallLedger(run_id=context.run_id, asset=context.asset_key.to_user_string())
    verifier = ClaimVerifier(
        vector_store, retrieval_index.collection, model=model, thresholds=CALIBRATION.thresholds, ledger=ledger
    )
    verdicts = verifier.verify([Claim(id=c.claim_id, text=c.text, cited_chunk_ids=c.cited_chunk_ids) for c in claims])
    rows = [
        FactCheck(
            claim_id=c.claim_id,
            draft_id=c.draft_id,
            topic=c.topic,
            claim=c.text,
            verdict=v.verdict,
            score=v.score,
            evidence_chunk_ids=v.evidence,
            evidence_sentence=v.evidence_sentence,
            contested=v.contested,
            conflicting_chunk_ids=v.conflicting_chunk_ids,
            conflict=v.conflict,
            index_version=retrieval_index.version,
        )
        for c, v in zip(claims, verdicts)
    ]
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
            "index_version": retrieval_index.version,
            "calibration": MetadataValue.json(CALIBRATION.model_dump()),
            **ledger_metadata(ledger, model),
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


@asset_check(
    asset=fact_checks,
    blocking=True,
    description="The share of claims that are not supported stays at or below max_unsupported_share.",
)
def unsupported_share_within_limit(pipeline: PipelineConfig, fact_checks: pd.DataFrame) -> AssetCheckResult:
    total = len(fact_checks)
    unsupported = fact_checks[fact_checks["verdict"] != "supported"] if total else fact_checks
    share = len(unsupported) / total if total else 1.0
    return AssetCheckResult(
        passed=total > 0 and share <= pipeline.max_unsupported_share,
        severity=AssetCheckSeverity.ERROR,
        description=f"{len(unsupported)} of {total} claims are not supported ({share:.0%})",
        metadata={
            "unsupported_share": round(share, 3),
            "max_unsupported_share": pipeline.max_unsupported_share,
            "unsupported_claims": MetadataValue.md(
                markdown_table(unsupported[["verdict", "claim"]].head(10).to_dict(orient="records"))
            ),
        },
    )
