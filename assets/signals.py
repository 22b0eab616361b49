"""Signals: per-document entities, events, key figures and sentiment, each with evidence.

The model answers with sentence numbers, not quotes, and every item is then checked
against the sentence it cites (an entity's name must appear in it, a figure's number
must appear in it). Items that fail are dropped and counted, so every stored signal
points to a real span of its document whatever the model's quality.
"""

from typing import Literal, Sequence

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    Output,
    asset_check,
)
from pydantic import BaseModel, Field

from assets.config import PipelineConfig
from assets.ingestion import Chunk, SourceDocument, evidence_sentences
from assets.llm_step import StepRun
from assets.prompts import Prompt
from assets.share_checks import failed_requests_check_result
from resources.markdown_tables import markdown_table
from resources.model_session import ProgressLog
from resources.partition_results import partition_results
from resources.prompt_injection import neutralize, unflagged
from resources.tables import from_frame, to_frame
from resources.text import Span, normalize, numbers_in, words_in

MAX_SENTENCES = 40
# Hard caps on what one extraction prompt shows of a document; what they cut is recorded.
MAX_PROMPT_SENTENCE_CHARS = 400
MAX_PROMPT_CHARS = 12_000


# What the model is asked to return.
class ExtractedEntity(BaseModel):
    name: str = Field(max_length=60)
    kind: Literal["company", "person", "place", "product", "other"]
    sentence: int


class ExtractedEvent(BaseModel):
    description: str = Field(max_length=120)
    sentence: int


class ExtractedFigure(BaseModel):
    label: str = Field(max_length=60)
    value: str = Field(max_length=30)
    sentence: int


class ExtractedSignals(BaseModel):
    entities: list[ExtractedEntity] = Field(max_length=4)
    events: list[ExtractedEvent] = Field(max_length=2)
    key_figures: list[ExtractedFigure] = Field(max_length=2)
    sentiment: Literal["positive", "negative", "neutral", "mixed"]
    sentiment_sentence: int


# What is stored once every item is tied to its evidence.
class EvidenceSpan(BaseModel):
    quote: str
    start: int = Field(description="Character offset in the document's text.")
    end: int
    chunk_id: str


class Entity(BaseModel):
    name: str
    kind: str
    evidence: EvidenceSpan


class Event(BaseModel):
    description: str
    evidence: EvidenceSpan


class KeyFigure(BaseModel):
    label: str
    value: str
    evidence: EvidenceSpan


class DocumentSignals(BaseModel):
    document: str = Field(default="", description="The documents partition this row belongs to.")
    doc_id: str
    title: str
    status: Literal["valid", "ungrounded", "failed"] = Field(
        description="valid: schema-valid with at least one grounded item."
    )
    error: str = ""
    entities: list[Entity] = []
    events: list[Event] = []
    key_figures: list[KeyFigure] = []
    sentiment: str = ""
    sentiment_evidence: EvidenceSpan | None = None
    dropped_items: int = Field(default=0, description="Items whose evidence did not hold.")
    trace_id: str = Field(default="", description="The model call whose answer was used, in the trace table.")
    prompt_cut_chars: int = Field(
        default=0, description="Characters of the first MAX_SENTENCES evidence sentences the prompt caps left out."
    )

    @property
    def grounded_sentiment(self) -> str:
        """The tone, only when the signals held up against their evidence; a failed or
        ungrounded extraction says nothing reliable about its document's tone."""
        return self.sentiment if self.status == "valid" and self.sentiment_evidence is not None else ""


def prompt_sentences(sentences: Sequence[Span]) -> tuple[list[str], int]:
    """The numbered lines one prompt shows, within MAX_PROMPT_SENTENCE_CHARS per sentence and
    MAX_PROMPT_CHARS in all, and how many characters of the first MAX_SENTENCES were cut."""
    lines: list[str] = []
    cut, total = 0, 0
    for index, sentence in enumerate(sentences[:MAX_SENTENCES]):
        text = " ".join(sentence.text.split())
        shown = text if len(text) <= MAX_PROMPT_SENTENCE_CHARS else text[: MAX_PROMPT_SENTENCE_CHARS - 1] + "…"
        line = f"[{index}] {neutralize(shown)}"
        if total + len(line) + 1 > MAX_PROMPT_CHARS:
            cut += sum(len(s.text) for s in sentences[index:MAX_SENTENCES])
            break
        cut += len(text) - len(shown.rstrip("…"))
        lines.append(line)
        total += len(line) + 1
    return lines, cut


def extraction_messages(
    prompt: Prompt, document: SourceDocument, sentences: Sequence[Span] | None = None
) -> list[dict[str, str]]:
    """The extraction prompt (assets/steps/signals); the document's sentences sit in a
    delimited data block, and flagged sentences are never among them."""
    shown = evidence_sentences(document) if sentences is None else unflagged(sentences, document.flagged)
    lines, _ = prompt_sentences(shown)
    return [
        {
            "role": "user",
            "content": prompt.render(title=neutralize(document.title), numbered_sentences="\n".join(lines)),
        }
    ]


class _Grounder:
    """Ties extracted items to the sentences of one document."""

    def __init__(self, sentences: Sequence[Span], chunks: Sequence[Chunk]):
        self.sentences = list(sentences[:MAX_SENTENCES])
        self.chunks = chunks

    def span(self, index: int) -> EvidenceSpan:
        sentence = self.sentences[index]
        chunk_id = next((c.chunk_id for c in self.chunks if c.char_start <= sentence.start < c.char_end), "")
        return EvidenceSpan(quote=sentence.text, start=sentence.start, end=sentence.end, chunk_id=chunk_id)

    def find(self, cited: int, holds) -> int | None:
        """The cited sentence if `holds` for it, else the first sentence for which it does."""
        if 0 <= cited < len(self.sentences) and holds(self.sentences[cited].text):
            return cited
        return next((i for i, s in enumerate(self.sentences) if holds(s.text)), None)


def _names_in(name: str):
    target = normalize(name)
    return lambda sentence: bool(target) and f" {target} " in f" {normalize(sentence)} "


def _figure_in(value: str):
    wanted = numbers_in(value)
    return lambda sentence: bool(wanted) and wanted <= numbers_in(sentence)


def _describes(description: str):
    wanted = {w for w in words_in(description) if len(w) > 3}
    return lambda sentence: bool(wanted) and len(wanted & words_in(sentence)) >= max(1, len(wanted) // 2)


def ground(document: SourceDocument, chunks: Sequence[Chunk], extracted: ExtractedSignals) -> DocumentSignals:
    grounder = _Grounder(evidence_sentences(document), chunks)
    kept: dict[str, list] = {"entities": [], "events": [], "key_figures": []}
    dropped = 0
    for item in extracted.entities:
        index = grounder.find(item.sentence, _names_in(item.name))
        if index is None:
            dropped += 1
        elif item.name.lower() not in {e.name.lower() for e in kept["entities"]}:
            kept["entities"].append(Entity(name=item.name.strip(), kind=item.kind, evidence=grounder.span(index)))
    for item in extracted.events:
        index = grounder.find(item.sentence, _describes(item.description))
        if index is None:
            dropped += 1
        else:
            kept["events"].append(Event(description=item.description.strip(), evidence=grounder.span(index)))
    for item in extracted.key_figures:
        index = grounder.find(item.sentence, _figure_in(item.value))
        if index is None:
            dropped += 1
        else:
            kept["key_figures"].append(
                KeyFigure(label=item.label.strip(), value=item.value.strip(), evidence=grounder.span(index))
            )
    sentiment_index = extracted.sentiment_sentence
    sentiment_evidence = grounder.span(sentiment_index) if 0 <= sentiment_index < len(grounder.sentences) else None
    grounded = sum(len(v) for v in kept.values())
    return DocumentSignals(
        document=document.document,
        doc_id=document.doc_id,
        title=document.title,
        status="valid" if grounded else "ungrounded",
        error="" if grounded else "no extracted item matched its evidence sentence",
        sentiment=extracted.sentiment,
        sentiment_evidence=sentiment_evidence,
        dropped_items=dropped,
        **kept,
    )


def extract_signals(run: StepRun) -> Output[pd.DataFrame]:
    """The runner of the `signals` step (assets/steps/signals/defs.yaml): the declared call
    per document, then every extracted item tied to the sentence it cites."""
    context, llm = run.context, run.llm
    documents = from_frame(run.inputs["source_documents"], SourceDocument)
    all_chunks = from_frame(run.inputs["chunks"], Chunk)
    by_doc: dict[str, list[Chunk]] = {}
    for chunk in all_chunks:
        by_doc.setdefault(chunk.doc_id, []).append(chunk)
    requests = [extraction_messages(run.prompt, d, evidence_sentences(d)) for d in documents]
    prompt_cuts = {d.doc_id: prompt_sentences(evidence_sentences(d))[1] for d in documents}
    context.log.info(f"Extracting signals from {len(documents)} documents")
    answers = llm.map_traced_structured(
        requests,
        run.schema,
        tier=run.step.tier,  # type: ignore[arg-type]
        max_tokens=run.step.max_tokens,
        partitions=[d.document for d in documents],
        on_done=ProgressLog(context.log, "signals", len(requests)),
    )
    rows: list[DocumentSignals] = []
    for document, (answer, trace_id) in zip(documents, answers):
        if isinstance(answer, Exception):
            context.log.warning(f"Signals for {document.path} failed: {answer}")
            rows.append(
                DocumentSignals(
                    document=document.document,
                    doc_id=document.doc_id,
                    title=document.title,
                    status="failed",
                    error=str(answer),
                )
            )
        else:
            rows.append(
                ground(document, by_doc.get(document.doc_id, []), answer).model_copy(
                    update={"trace_id": trace_id, "prompt_cut_chars": prompt_cuts[document.doc_id]}
                )
            )
    # Each partition's materialization describes its own document and its own calls, so
    # that adding them up over partitions gives the run's totals.
    for row in rows:
        context.add_asset_metadata(signals_metadata([row]), partition_key=row.document)
    for key in sorted(set(context.partition_keys) - {r.document for r in rows}):  # quarantined files: same keys, zeros
        context.add_asset_metadata(
            {**signals_metadata([]), "note": "no text document (see quarantined_documents)"},
            partition_key=key,
        )
    summary = llm.ledger.summary()
    context.log.info(
        f"Signals: {sum(r.status == 'valid' for r in rows)} of {len(rows)} documents valid; "
        f"{summary.requests} model requests, {summary.failed_requests} failed, {summary.cache_hits} from cache"
    )
    return Output(to_frame(rows, DocumentSignals), metadata={"prompt_version": run.prompt.version})


def signals_metadata(rows: list[DocumentSignals]) -> dict[str, object]:
    """One partition's figures; the model session adds that partition's usage."""
    valid = sum(r.status == "valid" for r in rows)
    return {
        "documents": len(rows),
        "valid": valid,
        "validity_rate": round(valid / max(1, len(rows)), 3),
        "entities": sum(len(r.entities) for r in rows),
        "events": sum(len(r.events) for r in rows),
        "key_figures": sum(len(r.key_figures) for r in rows),
        "dropped_items": sum(r.dropped_items for r in rows),
        "preview": MetadataValue.md(
            markdown_table(
                [
                    {
                        "document": r.title,
                        "status": r.status,
                        "entities": ", ".join(e.name for e in r.entities),
                        "figures": ", ".join(f"{f.label}: {f.value}" for f in r.key_figures),
                        "sentiment": r.sentiment,
                        "error": r.error,
                    }
                    for r in rows[:10]
                ]
            )
        ),
    }


@asset_check(
    asset="signals",
    blocking=True,
    description="Share of documents whose signals validated and grounded is at least min_signal_validity.",
)
def signal_validity(pipeline: PipelineConfig, signals: pd.DataFrame) -> AssetCheckResult:
    total = len(signals)
    valid = int((signals["status"] == "valid").sum()) if total else 0
    rate = valid / total if total else 0.0
    failures = signals[signals["status"] != "valid"][["title", "status", "error"]] if total else signals
    return AssetCheckResult(
        passed=rate >= pipeline.min_signal_validity,
        severity=AssetCheckSeverity.ERROR,
        description=f"{valid} of {total} documents have valid, grounded signals",
        metadata={
            "validity_rate": round(rate, 3),
            "min_signal_validity": pipeline.min_signal_validity,
            "not_valid": MetadataValue.md(markdown_table(failures.head(10).to_dict(orient="records"))),
            **partition_results(
                (row["document"], row["status"] == "valid", row["error"] or row["status"])
                for row in signals.to_dict(orient="records")
            ),
        },
    )


@asset_check(
    asset="signals",
    blocking=False,
    description="Warns when more than max_failed_request_share of the documents' extraction requests failed "
    "(endpoints down, or answers that stayed invalid): the outage is named in the failures.",
)
def signal_requests_succeeded(pipeline: PipelineConfig, signals: pd.DataFrame) -> AssetCheckResult:
    failed = signals["status"] == "failed"
    return failed_requests_check_result(signals, failed, ["document", "error"], pipeline.max_failed_request_share)
