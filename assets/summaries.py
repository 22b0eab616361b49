"""Summaries: the digest, built only from supported, uncontested claims and from signals.

Nothing here is generated: a summary is the supported claims of a topic in draft
order, with the tone and key figures of the documents they cite, taken only from
signals that held up against their evidence (a failed or ungrounded extraction says
nothing reliable). A claim the fact checks did not support, or that another document
contradicts, cannot reach it.
"""


from collections import Counter
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
    asset_check,
)
from pydantic import BaseModel

from assets.config import PipelineConfig
from assets.fact_checks import FactCheck
from assets.frames import from_frame, table_output, to_frame
from assets.output_files import write_whole
from assets.signals import DocumentSignals

GROUP = "summaries"
CODE_VERSION = "1"


class TopicSummary(BaseModel):
    topic: str
    summary: str
    claim_ids: list[str]
    chunk_ids: list[str]
    excluded_claims: int
    sentiment_mix: dict[str, int]
    key_figures: list[str]
    index_version: str


def summarize(topic: str, checks: list[FactCheck], signals_by_doc: dict[str, DocumentSignals]) -> TopicSummary:
    kept = list({c.claim: c for c in checks if c.verdict == "supported" and not c.contested}.values())
    chunk_ids = sorted({i for c in kept for i in c.evidence_chunk_ids})
    doc_ids = {i.rsplit("-", 1)[0] for i in chunk_ids}
    cited = [signals_by_doc[d] for d in sorted(doc_ids) if d in signals_by_doc]
    return TopicSummary(
        topic=topic,
        summary=" ".join(c.claim.rstrip(".") + "." for c in kept),
        claim_ids=[c.claim_id for c in kept],
        chunk_ids=chunk_ids,
        excluded_claims=sum(c.verdict != "supported" or c.contested for c in checks),
        sentiment_mix=dict(Counter(s.grounded_sentiment for s in cited if s.grounded_sentiment)),
        key_figures=list(dict.fromkeys(f"{f.label}: {f.value}" for s in cited if s.status == "valid" for f in s.key_figures))[:6],
        index_version=checks[0].index_version if checks else "",
    )


def render_digest(rows: list[TopicSummary]) -> str:
    parts = ["# Digest", ""]
    for row in rows:
        parts += [f"## {row.topic}", "", row.summary or "_No supported claims._", ""]
        if row.key_figures:
            parts += ["Key figures: " + "; ".join(row.key_figures), ""]
        if row.sentiment_mix:
            parts += ["Tone of sources: " + ", ".join(f"{k} {v}" for k, v in sorted(row.sentiment_mix.items())), ""]
        parts += [f"Evidence: {', '.join(row.chunk_ids) or 'none'} (index {row.index_version})", ""]
    return "\n".join(parts)


@asset(
    group_name=GROUP,
    code_version=CODE_VERSION,
    **table_output(TopicSummary, "markdown"),
)
def summaries(
    context: AssetExecutionContext,
    pipeline: PipelineConfig,
    fact_checks: pd.DataFrame,
    signals: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """The digest: per topic, only supported and uncontested claims, with the signals of their sources."""
    checks = from_frame(fact_checks, FactCheck)
    signals_by_doc = {s.doc_id: s for s in from_frame(signals, DocumentSignals)}
    topics = list(dict.fromkeys(c.topic for c in checks))
    rows = [summarize(t, [c for c in checks if c.topic == t], signals_by_doc) for t in topics]
    digest = render_digest(rows)
    path = pipeline.output_path() / "digest.md"
    write_whole(path, digest)
    context.log.info(f"Digest written to {path.resolve()}")
    return Output(
        to_frame(rows, TopicSummary),
        metadata={
            "location": MetadataValue.path(str(Path(path).resolve())),
            "topics": len(rows),
            "claims_published": sum(len(r.claim_ids) for r in rows),
            "claims_excluded": sum(r.excluded_claims for r in rows),
            "preview": MetadataValue.md(digest),
        },
    )


@asset_check(
    asset=summaries,
    blocking=True,
    additional_ins={"fact_checks": AssetIn("fact_checks")},
    description="Every claim in a summary was verified as supported and uncontested; none was refuted.",
)
def summaries_only_supported_claims(summaries: pd.DataFrame, fact_checks: pd.DataFrame) -> AssetCheckResult:
    checks = {c.claim_id: c for c in from_frame(fact_checks, FactCheck)}
    used = [i for s in from_frame(summaries, TopicSummary) for i in s.claim_ids]
    bad = [i for i in used if i not in checks or checks[i].verdict != "supported" or checks[i].contested]
    refuted_texts = [c.claim for c in checks.values() if c.verdict == "refuted"]
    leaked = [t for t in refuted_texts if any(t.rstrip(".") in s for s in summaries["summary"])]
    return AssetCheckResult(
        passed=not bad and not leaked,
        severity=AssetCheckSeverity.ERROR,
        description=f"{len(used)} claims published; {len(bad)} not supported; {len(leaked)} refuted texts present",
        metadata={
            "claims_published": len(used),
            "unsupported_claim_ids": MetadataValue.json(bad[:20]),
            "refuted_claims_present": MetadataValue.json(leaked[:20]),
        },
    )
