"""Drafts: a brief per topic, written claim by claim from retrieved evidence.

Each claim starts from one evidence sentence in the index and cites its chunk. The
model only rewrites that sentence; a rewrite that drifts from its evidence (lower
similarity, a number or a negation that the evidence lacks) is replaced by the
evidence sentence itself. Drafts are grounded by construction, and the fact-check
stage still verifies every claim independently.
"""


import hashlib
import re
from collections import Counter

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
from pydantic import BaseModel, Field

from assets.claim_verification import conflict_between, content_words
from assets.config import PipelineConfig
from assets.frames import from_frame, table_output, to_frame
from assets.guardrails import neutralize
from assets.metadata import MODEL_POOL, failed_requests_check_result, ledger_metadata
from assets.progress import ProgressLog
from assets.prompts import load_prompt
from assets.retrieval import IndexManifest
from assets.signals import DocumentSignals
from assets.text import numbers_in, split_sentences
from resources import CallLedger, ModelResource, VectorStoreResource

GROUP = "drafts"
PROMPT = load_prompt("draft_claim")
CODE_VERSION = f"1-{PROMPT.version}"


class ClaimRewrite(BaseModel):
    claim: str = Field(min_length=8, max_length=300)


class DraftClaim(BaseModel):
    claim_id: str
    draft_id: str
    topic: str
    position: int
    text: str
    cited_chunk_ids: list[str]
    evidence_sentence: str
    origin: str = Field(description="'model' when the rewrite held to its evidence, else 'extractive'.")
    grounding: float = Field(description="Similarity of the claim to its evidence sentence.")
    trace_id: str = Field(description="The model call that wrote (or proposed) this claim, in the trace table.")
    model_error: str = Field(default="", description="Why the model call failed, when the evidence sentence stood in for it.")


class Evidence(BaseModel):
    chunk_id: str
    doc_id: str
    sentence: str


def choose_topics(rows: list[DocumentSignals], configured: list[str], limit: int) -> list[str]:
    """Configured topics, else the companies named (with evidence) in the most documents."""
    if configured:
        return configured[:limit]
    counts: Counter[str] = Counter()
    kinds: dict[str, str] = {}
    for row in rows:
        for name in {e.name for e in row.entities}:
            counts[name] += 1
        for entity in row.entities:
            kinds.setdefault(entity.name, entity.kind)
    ranked = sorted(counts, key=lambda n: (kinds[n] != "company", -counts[n], n))
    return [n for n in ranked if counts[n] >= 2][:limit]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "topic"


def gather_evidence(
    vector_store: VectorStoreResource, collection: str, topic: str, wanted: int
) -> list[Evidence]:
    """Sentences naming the topic, taken across documents in turn so one article does not dominate."""
    hits = vector_store.query(collection, [topic], n_results=max(8, wanted * 3), contains=topic)[0]
    per_doc: dict[str, list[Evidence]] = {}
    for hit in hits:
        for span in split_sentences(hit.text):
            if topic.lower() in span.text.lower() and len(span.text.split()) >= 6:
                doc_id = str(hit.metadata.get("doc_id", hit.id))
                per_doc.setdefault(doc_id, []).append(Evidence(chunk_id=hit.id, doc_id=doc_id, sentence=span.text))
    chosen: list[Evidence] = []
    queues = list(per_doc.values())
    while queues and len(chosen) < wanted:
        for queue in list(queues):
            if queue and len(chosen) < wanted:
                chosen.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return chosen


def draft_messages(topic: str, evidence: Evidence) -> list[dict[str, str]]:
    """The rewrite prompt: the evidence sentence sits in a delimited data block."""
    return [{"role": "user", "content": PROMPT.render(topic=neutralize(topic), evidence=neutralize(evidence.sentence))}]


def holds_to(claim: str, evidence: str, similarity: float, minimum: float) -> bool:
    """A rewrite may reword its evidence, not add to it or drop most of it."""
    claim_words, evidence_words = content_words(claim), content_words(evidence)
    added = claim_words - evidence_words
    return (
        similarity >= minimum
        and len(claim.split()) >= 6
        and len(added) <= max(1, len(claim_words) // 5)
        and len(claim_words & evidence_words) >= 0.6 * len(evidence_words)
        and numbers_in(claim) <= numbers_in(evidence)
        and not conflict_between(claim, evidence)
    )


@asset(
    group_name=GROUP,
    code_version=CODE_VERSION,
    pool=MODEL_POOL,
    **table_output(DraftClaim, "openai", "chroma", prompt_version=PROMPT.version),
)
def drafts(
    context: AssetExecutionContext,
    pipeline: PipelineConfig,
    model: ModelResource,
    vector_store: VectorStoreResource,
    retrieval_index: IndexManifest,
    signals: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """Grounded briefs per topic: one claim per evidence sentence, each citing the chunk it rests on."""
    topics = choose_topics(from_frame(signals, DocumentSignals), pipeline.topics, pipeline.max_topics)
    context.log.info(f"Drafting {len(topics)} topics: {', '.join(topics)}")
    plan = [
        (topic, evidence)
        for topic in topics
        for evidence in gather_evidence(
            vector_store, retrieval_index.collection, topic, pipeline.claims_per_draft
        )
    ]
    ledger = CallLedger(run_id=context.run_id, asset=context.asset_key.to_user_string())
    traced = model.map_traced_structured(
        [draft_messages(t, e) for t, e in plan],
        ClaimRewrite,
        tier="strong",
        max_tokens=120,
        ledger=ledger,
        on_done=ProgressLog(context.log, "drafted claims", len(plan)),
    )
    answers = [answer for answer, _ in traced]
    proposed = [a.claim.strip() if isinstance(a, ClaimRewrite) else e.sentence for (_, e), a in zip(plan, answers)]
    embeddings = vector_store.embeddings
    similarities = (
        (embeddings.embed_queries(proposed) * embeddings.embed_queries([e.sentence for _, e in plan])).sum(axis=1)
        if plan
        else []
    )
    rows: list[DraftClaim] = []
    positions: Counter[str] = Counter()
    for (topic, evidence), claim, (answer, trace_id), similarity in zip(plan, proposed, traced, similarities):
        kept = isinstance(answer, ClaimRewrite) and holds_to(
            claim, evidence.sentence, float(similarity), pipeline.min_claim_grounding
        )
        text = claim if kept else evidence.sentence
        draft_id = slug(topic)
        rows.append(
            DraftClaim(
                claim_id=hashlib.sha256(f"{draft_id}|{evidence.chunk_id}|{text}".encode()).hexdigest()[:12],
                draft_id=draft_id,
                topic=topic,
                position=positions[draft_id],
                text=text,
                cited_chunk_ids=[evidence.chunk_id],
                evidence_sentence=evidence.sentence,
                origin="model" if kept else "extractive",
                grounding=round(float(similarity) if kept else 1.0, 4),
                trace_id=trace_id,
                model_error=str(answer) if isinstance(answer, Exception) else "",
            )
        )
        positions[draft_id] += 1
    preview = "\n\n".join(
        f"**{topic}**\n\n" + "\n".join(f"- {r.text} [{', '.join(r.cited_chunk_ids)}]" for r in rows if r.topic == topic)
        for topic in topics
    )
    return Output(
        to_frame(rows, DraftClaim),
        metadata={
            "drafts": len(topics),
            "claims": len(rows),
            "model_written_claims": sum(r.origin == "model" for r in rows),
            "extractive_claims": sum(r.origin == "extractive" for r in rows),
            "topics": MetadataValue.json(topics),
            "index_version": retrieval_index.version,
            "prompt_version": PROMPT.version,
            **ledger_metadata(ledger, model),
            "preview": MetadataValue.md(preview or "_(no drafts)_"),
        },
    )


@asset_check(
    asset=drafts,
    blocking=True,
    additional_ins={"retrieval_index": AssetIn("retrieval_index")},
    description="There is at least one claim, every claim cites a chunk, and every cited chunk exists in the index.",
)
def drafts_cite_indexed_chunks(
    vector_store: VectorStoreResource, drafts: pd.DataFrame, retrieval_index: IndexManifest
) -> AssetCheckResult:
    rows = from_frame(drafts, DraftClaim)
    indexed = vector_store.ids(retrieval_index.collection)
    uncited = [r.claim_id for r in rows if not r.cited_chunk_ids]
    unknown = sorted({c for r in rows for c in r.cited_chunk_ids} - indexed)
    return AssetCheckResult(
        passed=bool(rows) and not uncited and not unknown,
        severity=AssetCheckSeverity.ERROR,
        description=f"{len(rows)} claims; {len(uncited)} without citation; {len(unknown)} unknown chunk ids",
        metadata={
            "claims": len(rows),
            "uncited_claims": MetadataValue.json(uncited[:20]),
            "unknown_chunk_ids": MetadataValue.json(unknown[:20]),
        },
    )


@asset_check(
    asset=drafts,
    blocking=False,
    description="Warns when more than max_failed_request_share of the claims' model requests failed, so "
    "that an outage hidden behind extractive fallbacks is seen.",
)
def draft_requests_succeeded(pipeline: PipelineConfig, drafts: pd.DataFrame) -> AssetCheckResult:
    failed = drafts["model_error"].fillna("") != ""
    return failed_requests_check_result(drafts, failed, ["topic", "model_error"], pipeline.max_failed_request_share)
