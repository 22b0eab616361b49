"""Drafts: a brief per topic, written by the strong tier from a numbered evidence list.

The model writes in its own words; nothing here constrains its wording. What keeps a
draft honest is downstream: every sentence is a claim that cites the evidence items it
rests on, the fact checks verify each one, and the refinement loop revises or drops
what fails. What is enforced at this stage is form, never content: the model must cite
items that exist, must not echo the prompt's own instructions, and must not write one
sentence twice (a small model fills its sentence count with copies of one sentence); each
fault is a validation error, re-asked through the gateway with the error. The grammar
cannot hold this for it: llguidance, the embedded server's JSON-schema engine, has no
`uniqueItems`, and copies that differ by a comma would satisfy it anyway. A near repeat
that survives (the same words less a few) is dropped before it becomes a claim, counted. The model's text is kept
as written, and the evidence list it saw is kept with the draft, except where the
publication rules say a line is not a sentence: a stray label before it ("2026:", "[3]",
the evidence line's "(title, date)") is stripped, and a line that is only a title or a
date is not a claim at all (dropped before verification, counted), since no verdict on
it could make it worth reading.
"""

import hashlib
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

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
from pydantic import BaseModel, Field, create_model, model_validator

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.check_results import failed_requests_check_result
from assets.digest.retrieval import IndexManifest
from assets.digest.signals import DocumentSignals
from resources import ModelResource, VectorStoreResource
from resources.documents.records import SourceDocument
from resources.documents.text import normalize, split_sentences
from resources.guardrails.prompt_injection import data_block
from resources.pipeline_config import PipelineConfig
from resources.prompts import load_prompt
from resources.tables import from_frame, to_frame
from resources.verification.citations import citing_within as cited_schema
from resources.verification.publication_rules import (
    find_prompt_echo,
    is_list_furniture,
    repeated_sentence,
    sentence_key,
    without_label,
)

GROUP = "drafts"
HERE = Path(__file__).parent
PROMPT = load_prompt(HERE, "draft_brief")
CODE_VERSION = f"6-{PROMPT.version}"
MIN_SENTENCES, MAX_SENTENCES = 3, 8
MAX_EVIDENCE_ITEMS = 12


class EvidenceItem(BaseModel):
    """One numbered item of the evidence list a draft was written from."""

    number: int
    chunk_id: str
    doc_id: str
    title: str = ""
    published: str = ""
    sentence: str


class BriefSentence(BaseModel):
    text: str = Field(min_length=8, max_length=400)
    evidence: list[int] = Field(min_length=1, max_length=4, description="Numbers of the evidence items it rests on.")


class DraftBrief(BaseModel):
    sentences: list[BriefSentence] = Field(min_length=1, max_length=MAX_SENTENCES)


def citing_within(count: int, minimum: int = MIN_SENTENCES) -> type[DraftBrief]:
    """The brief schema for one request: at least `minimum` sentences, citing only items 1..count."""
    return cited_schema(DraftBrief, count, field="evidence", items="evidence items", minimum=minimum)


def brief_faults(answer: DraftBrief, prompt: str) -> list[str]:
    """Why a brief must be written again: a sentence echoes the request's instructions (the
    evidence it quotes may be repeated freely), or it is an earlier sentence of the brief again
    once case, punctuation and a stray label are ignored. The copies of one sentence make one
    reason naming them all: the reason goes back to the model inside the re-ask, and a small
    model that wrote one sentence eight times overflowed its context with seven reasons."""
    faults = []
    copies: dict[str, list[int]] = {}
    texts: dict[int, str] = {}
    for position, sentence in enumerate(answer.sentences, start=1):
        echo = find_prompt_echo(sentence.text, prompt)
        if echo is not None:
            faults.append(f"sentence {position} repeats the instructions ({echo!r}); write about the evidence instead")
        key = sentence_key(without_label(sentence.text))
        copies.setdefault(key, []).append(position)
        texts[position] = sentence.text.strip()
    for key, positions in copies.items():
        if len(positions) > 1:
            repeats = ", ".join(str(p) for p in positions[1:])
            faults.append(
                f"sentence{'s' if len(positions) > 2 else ''} {repeats} repeat{'' if len(positions) > 2 else 's'} "
                f"sentence {positions[0]} ({texts[positions[1]][:120]!r}); each sentence must state a different fact, "
                "so write fewer sentences rather than a copy"
            )
    return faults


def brief_schema(messages: list[dict[str, str]], count: int, minimum: int = MIN_SENTENCES) -> type[DraftBrief]:
    """The brief schema for one drafting request: `citing_within`, and none of `brief_faults`."""
    prompt = "\n".join(m["content"] for m in messages)

    def _fit_to_publish(answer: DraftBrief) -> DraftBrief:
        faults = brief_faults(answer, prompt)
        if faults:
            raise ValueError("; ".join(faults))
        return answer

    return create_model(  # type: ignore[call-overload, no-any-return]
        DraftBrief.__name__,
        __base__=citing_within(count, minimum),
        __validators__={"_fit_to_publish": model_validator(mode="after")(_fit_to_publish)},
    )


class DraftClaim(BaseModel):
    claim_id: str
    draft_id: str
    topic: str
    position: int
    text: str = Field(
        description="The sentence exactly as the model wrote it (or the evidence sentence, if extractive)."
    )
    cited_chunk_ids: list[str]
    evidence_numbers: list[int] = Field(description="The evidence items it cites, numbered as in evidence_list.")
    evidence_sentence: str = Field(description="The first cited evidence item's sentence.")
    evidence_list: list[EvidenceItem] = Field(
        description="The whole numbered evidence list the draft was written from."
    )
    origin: str = Field(
        description="'model' when the model wrote it, 'extractive' when its draft failed and evidence stood in."
    )
    trace_id: str = Field(description="The model call that wrote this draft, in the trace table.")
    model_error: str = Field(
        default="", description="Why the model call failed, when evidence sentences stood in for it."
    )


def choose_topics(rows: list[DocumentSignals], configured: list[str], limit: int) -> list[str]:
    """Configured topics, else the companies named (with evidence) in the most documents."""
    if configured:
        return configured[:limit]
    counts: Counter[str] = Counter()
    kinds: dict[str, str] = {}
    for row in rows:
        for name in {e.name for e in row.trusted_entities}:
            counts[name] += 1
        for entity in row.trusted_entities:
            kinds.setdefault(entity.name, entity.kind)
    ranked = sorted(counts, key=lambda n: (kinds[n] != "company", -counts[n], n))
    return [n for n in ranked if counts[n] >= 2][:limit]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "topic"


def gather_evidence(
    vector_store: VectorStoreResource,
    collection: str,
    topic: str,
    wanted: int,
    documents: dict[str, SourceDocument] | None = None,
) -> list[EvidenceItem]:
    """Sentences naming the topic, deduplicated and taken across documents in turn so one article does not dominate."""
    documents = documents or {}
    hits = vector_store.query(collection, [topic], n_results=max(8, wanted * 3), contains=topic)[0]
    per_doc: dict[str, list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for hit in hits:
        for span in split_sentences(hit.text):
            key = normalize(span.text)
            if topic.lower() in span.text.lower() and len(span.text.split()) >= 6 and key not in seen:
                seen.add(key)
                doc_id = str(hit.metadata.get("doc_id", hit.id))
                per_doc.setdefault(doc_id, []).append((hit.id, span.text))
    chosen: list[EvidenceItem] = []
    queues = list(per_doc.items())
    while queues and len(chosen) < wanted:
        for entry in list(queues):
            doc_id, queue = entry
            if queue and len(chosen) < wanted:
                chunk_id, sentence = queue.pop(0)
                document = documents.get(doc_id)
                chosen.append(
                    EvidenceItem(
                        number=len(chosen) + 1,
                        chunk_id=chunk_id,
                        doc_id=doc_id,
                        title=document.title if document else "",
                        published=document.published if document else "",
                        sentence=sentence,
                    )
                )
            if not queue:
                queues.remove(entry)
    return chosen


def numbered_evidence(items: Sequence[EvidenceItem]) -> str:
    """The evidence list as the model sees it: one numbered line per item, with its source."""
    return "\n".join(
        f"[{i.number}] ({i.title or 'untitled'}{', ' + i.published if i.published else ''}) {i.sentence}" for i in items
    )


def draft_messages(topic: str, evidence: Sequence[EvidenceItem]) -> list[dict[str, str]]:
    """The drafting prompt: the numbered evidence sits in a delimited data block."""
    content = PROMPT.render(
        topic=topic.replace("{", "(").replace("}", ")"),
        min_sentences=min(MIN_SENTENCES, len(evidence)),
        max_sentences=MAX_SENTENCES,
        evidence=data_block("evidence", numbered_evidence(evidence)),
    )
    return [{"role": "user", "content": content}]


def claim_id_for(draft_id: str, chunk_ids: Sequence[str], text: str) -> str:
    return hashlib.sha256(f"{draft_id}|{','.join(chunk_ids)}|{text}".encode()).hexdigest()[:12]


def claims_from_brief(
    topic: str, evidence: list[EvidenceItem], answer: DraftBrief | Exception, trace_id: str, fallback_claims: int
) -> list[DraftClaim]:
    """The model's sentences as claims; when its draft failed, the first evidence sentences stand in (extractive)."""
    draft_id = slug(topic)
    by_number = {i.number: i for i in evidence}
    if isinstance(answer, DraftBrief):
        written = [
            (without_label(s.text.strip()), [n for n in dict.fromkeys(s.evidence) if n in by_number], "model")
            for s in answer.sentences
        ]
        error = ""
    else:
        written = [(i.sentence, [i.number], "extractive") for i in evidence[:fallback_claims]]
        error = str(answer)
    rows = []
    for position, (text, numbers, origin) in enumerate(written):
        chunk_ids = list(dict.fromkeys(by_number[n].chunk_id for n in numbers))
        rows.append(
            DraftClaim(
                claim_id=claim_id_for(draft_id, chunk_ids, text),
                draft_id=draft_id,
                topic=topic,
                position=position,
                text=text,
                cited_chunk_ids=chunk_ids,
                evidence_numbers=numbers,
                evidence_sentence=by_number[numbers[0]].sentence if numbers else "",
                evidence_list=evidence,
                origin=origin,
                trace_id=trace_id,
                model_error=error,
            )
        )
    return rows


def without_list_furniture(rows: list[DraftClaim]) -> tuple[list[DraftClaim], list[DraftClaim]]:
    """The claims that are sentences, and the lines that are only a title or a date (not claims)."""
    return [r for r in rows if not is_list_furniture(r.text)], [r for r in rows if is_list_furniture(r.text)]


def without_repeats(rows: list[DraftClaim]) -> tuple[list[DraftClaim], list[DraftClaim]]:
    """The claims, and the model-written sentences that repeat an earlier one of their own draft
    (the publication rules' reading of a repeat, near repeats included): a copy is one fact
    told twice, and its verdict would add nothing. Evidence sentences that stand in are kept:
    they were deduplicated when gathered, and a shorter one may be a fact of its own."""
    kept: list[DraftClaim] = []
    repeats: list[DraftClaim] = []
    for row in rows:
        earlier = [k.text for k in kept if k.draft_id == row.draft_id]
        (repeats if row.origin == "model" and repeated_sentence(row.text, earlier) else kept).append(row)
    return kept, repeats


@asset(
    **PipelineAssetSpec(
        group=GROUP,
        code_version=CODE_VERSION,
        rows=DraftClaim,
        kinds={"openai", "chroma"},
        calls_model=True,
        metadata={"prompt_version": PROMPT.version},
    ).asset_keywords()
)
def drafts(
    context: AssetExecutionContext,
    pipeline: PipelineConfig,
    model: ModelResource,
    vector_store: VectorStoreResource,
    retrieval_index: IndexManifest,
    signals: pd.DataFrame,
    source_documents: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """Model-written briefs per topic: each sentence a claim citing the evidence items (chunks) it rests on."""
    topics = choose_topics(from_frame(signals, DocumentSignals), pipeline.topics, pipeline.max_topics)
    context.log.info(f"Drafting {len(topics)} topics: {', '.join(topics)}")
    documents = {d.doc_id: d for d in from_frame(source_documents, SourceDocument)}
    wanted = min(MAX_EVIDENCE_ITEMS, max(MIN_SENTENCES, 2 * pipeline.claims_per_draft))
    plan = [
        (topic, gather_evidence(vector_store, retrieval_index.collection, topic, wanted, documents)) for topic in topics
    ]
    plan = [(topic, evidence) for topic, evidence in plan if evidence]
    with model.session(context) as llm:
        progress = llm.progress("drafted topics", len(plan))

        def write(item: tuple[str, list[EvidenceItem]]) -> tuple[DraftBrief | Exception, str]:
            # One request per topic: each has its own schema (the citations its evidence list allows).
            topic, evidence = item
            messages = draft_messages(topic, evidence)
            return llm.map_traced_structured(
                [messages],
                brief_schema(messages, len(evidence)),
                tier="strong",
                max_tokens=900,
                on_done=progress,
            )[0]

        with ThreadPoolExecutor(max_workers=max(1, min(len(plan), model.max_concurrency))) as pool:
            traced = list(pool.map(write, plan))
    sentences, furniture = without_list_furniture(
        [
            row
            for (topic, evidence), (answer, trace_id) in zip(plan, traced)
            for row in claims_from_brief(topic, evidence, answer, trace_id, pipeline.claims_per_draft)
        ]
    )
    rows, repeats = without_repeats(sentences)
    preview = "\n\n".join(
        f"**{topic}**\n\n" + "\n".join(f"- {r.text} {r.evidence_numbers}" for r in rows if r.topic == topic)
        for topic, _ in plan
    )
    return Output(
        to_frame(rows, DraftClaim),
        metadata={
            "drafts": len(plan),
            "claims": len(rows),
            "model_written_claims": sum(r.origin == "model" for r in rows),
            "extractive_claims": sum(r.origin == "extractive" for r in rows),
            "failed_drafts": sum(isinstance(a, Exception) for a, _ in traced),
            "list_furniture_dropped": len(furniture),
            "list_furniture_lines": MetadataValue.json([r.text for r in furniture][:20]),
            "repeated_sentences_dropped": len(repeats),
            "repeated_sentences": MetadataValue.json([r.text for r in repeats][:20]),
            "evidence_items": sum(len(e) for _, e in plan),
            "topics": MetadataValue.json([t for t, _ in plan]),
            "index_version": retrieval_index.version,
            "prompt_version": PROMPT.version,
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
    description="Warns when more than max_failed_request_share of the drafts' model requests failed, so "
    "that an outage hidden behind extractive fallbacks is seen.",
)
def draft_requests_succeeded(pipeline: PipelineConfig, drafts: pd.DataFrame) -> AssetCheckResult:
    per_draft = drafts.drop_duplicates("draft_id") if len(drafts) else drafts
    failed = per_draft["model_error"].fillna("") != ""
    return failed_requests_check_result(per_draft, failed, ["topic", "model_error"], pipeline.max_failed_request_share)
