"""Signals: per-document entities, events, key figures and sentiment, each with evidence.

The model answers with sentence numbers, not quotes, and every item is then checked
against the sentence it cites (an entity's name must appear in it, a figure's number
must appear in it). Items that fail are dropped and counted, so every stored signal
points to a real span of its document whatever the model's quality.

Grounded is not right: a city can be grounded as a person. Every grounded item is then
reviewed for meaning (resources/signals/semantics.py): a person the text uses as a place,
product or company, a figure labelled with words its sentence does not use, a tone the
document's own event words contradict. Where the document's own words settle the answer
(resources/signals/review.py: "a factory in Rotterdam" is a place; a document whose only
event words are a recall is not good news) the review corrects it, keeping the model's answer
and the reason beside it; what they do not settle stays flagged, counted, and feeds nothing
downstream as a fact. On the labelled sample (the bundled corpus, resources/signals/labels.py)
each run measures entity-kind and tone accuracy of the model's answers and of the reviewed
signals, and `signal_validity` holds the reviewed ones (what later steps read) to floors.
"""

from pathlib import Path
from typing import Literal, Mapping, Sequence

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    Output,
    asset_check,
)
from pydantic import BaseModel, Field

from assets.components.check_results import failed_requests_check_result
from assets.components.llm_asset import LlmAsset, LlmCall, LlmRun
from assets.components.partitions import DOCUMENT_BATCHES
from resources.documents.batches import DocumentRow
from resources.documents.chunking import Chunk, evidence_sentences
from resources.documents.records import SourceDocument
from resources.documents.text import Span, normalize, numbers_in, words_in
from resources.gateway.progress import ProgressLog
from resources.guardrails.prompt_injection import neutralize, unflagged
from resources.metadata.markdown_tables import markdown_table
from resources.metadata.partition_results import partition_results
from resources.pipeline_config import PipelineConfig
from resources.prompts import Prompt
from resources.signals.labels import load_signal_labels, score
from resources.signals.review import ToneReview, review_kind, review_tone
from resources.signals.semantics import CorpusUsage, figure_problem, person_problem
from resources.tables import from_frame, to_frame

MAX_SENTENCES = 40
# The kinds a review can set, each counted per run.
CORRECTED_KINDS = ("place", "product", "company", "person")
# Hard caps on what one extraction prompt shows of a document; what they cut is recorded.
MAX_PROMPT_SENTENCE_CHARS = 400
MAX_PROMPT_CHARS = 12_000


# What the model is asked to return.
class ExtractedEntity(BaseModel):
    name: str = Field(max_length=60)
    kind: Literal["company", "person", "place", "product", "organisation", "other"]
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
    kind: str = Field(description="The reviewed kind: the model's, unless the document's own text corrected it.")
    evidence: EvidenceSpan
    flag: str = Field(default="", description="Why the model's kind contradicts the corpus; empty when nothing does.")
    model_kind: str = Field(default="", description="The kind the model gave.")
    correction: str = Field(default="", description="Why the review changed the model's kind; empty when it did not.")


class Event(BaseModel):
    description: str
    evidence: EvidenceSpan


class KeyFigure(BaseModel):
    label: str
    value: str
    evidence: EvidenceSpan
    flag: str = Field(default="", description="Why the label or value is not its sentence's; empty when they are.")


class DocumentSignals(DocumentRow):
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
    tone_contradiction: str = Field(
        default="",
        description="Why the document's own event words contradict the model's tone; empty when they do not.",
    )
    model_sentiment: str = Field(default="", description="The tone the model gave.")
    sentiment_correction: str = Field(
        default="", description="Why the review changed the model's tone; empty when it did not."
    )
    flagged_entities: int = Field(default=0, description="Grounded entities whose model kind the corpus contradicts.")
    corrected_entities: int = Field(default=0, description="Entities whose kind the document's own text corrected.")
    flagged_figures: int = Field(
        default=0, description="Grounded key figures whose label or value is not their sentence's."
    )
    in_sample: bool = Field(default=False, description="The document is in the labelled sample, byte for byte.")
    sample_entities: int = Field(default=0, description="Extracted entities the sample labels.")
    sample_entities_right: int = Field(default=0, description="Of those, how many have a labelled kind.")
    sample_tone_right: bool = Field(default=False, description="The tone is one the sample allows.")
    sample_entities_right_model: int = Field(default=0, description="As sample_entities_right, for the model's kinds.")
    sample_tone_right_model: bool = Field(default=False, description="The model's own tone is one the sample allows.")
    sample_misses: list[str] = Field(default=[], description="Where the extraction disagrees with the sample.")

    @property
    def grounded_sentiment(self) -> str:
        """The tone, only when the signals held up against their evidence and the document's
        own event words do not contradict it (or the review set it from them): otherwise it
        says nothing reliable."""
        held = self.status == "valid" and self.sentiment_evidence is not None
        return self.sentiment if held and (not self.tone_contradiction or self.sentiment_correction) else ""

    @property
    def trusted_entities(self) -> list[Entity]:
        """Entities that may feed later steps: grounded, and not contradicted by the corpus
        unless the document's own text settled their kind."""
        return [e for e in self.entities if not e.flag or e.correction] if self.status == "valid" else []

    @property
    def trusted_key_figures(self) -> list[KeyFigure]:
        """Key figures that may be stated as facts: grounded, labelled and valued from their sentence."""
        return [f for f in self.key_figures if not f.flag] if self.status == "valid" else []


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
    """The extraction prompt (prompts/extract_signals.txt); the document's sentences sit in a
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


def review(
    rows: list[DocumentSignals],
    documents: Sequence[SourceDocument],
    chunks: Mapping[str, Sequence[Chunk]] | None = None,
) -> list[DocumentSignals]:
    """Each row reviewed: what the document's own text settles corrected, what the corpus
    contradicts flagged, and both the model's answers and the reviewed ones scored against
    the labelled sample.

    A name's kind follows its own document's words when they give exactly one kind
    (resources/signals/review.py); a name typed person is also checked against its own
    sentence, the kinds the run's other documents gave it and every sentence of the run's
    documents, and stays flagged with its reason. A figure is checked against its sentence. A
    tone the document's own event words contradict follows them, with the first sentence
    holding one of them as its evidence."""
    by_id = {d.doc_id: d for d in documents}
    sentences = {d.doc_id: evidence_sentences(d) for d in documents}
    usage = CorpusUsage.of(
        ((r.document, e.name, e.kind) for r in rows for e in r.entities),
        (s.text for spans in sentences.values() for s in spans),
    )
    labels = load_signal_labels()
    reviewed: list[DocumentSignals] = []
    for row in rows:
        own = [row.title, *(s.text for s in sentences.get(row.doc_id, []))]
        entities = []
        for e in row.entities:
            kind = review_kind(e.name, e.kind, own)
            flag = person_problem(e.name, e.evidence.quote, usage, row.document) if e.kind == "person" else ""
            entities.append(
                e.model_copy(
                    update={"kind": kind.kind, "model_kind": e.kind, "correction": kind.correction, "flag": flag}
                )
            )
        figures = [
            f.model_copy(update={"flag": figure_problem(f.label, f.value, f.evidence.quote)}) for f in row.key_figures
        ]
        document = by_id.get(row.doc_id)
        tone = review_tone(row.sentiment, " ".join(own)) if document and row.sentiment else ToneReview(row.sentiment)
        update: dict[str, object] = {
            "entities": entities,
            "key_figures": figures,
            "flagged_entities": sum(bool(e.flag) for e in entities),
            "corrected_entities": sum(bool(e.correction) for e in entities),
            "flagged_figures": sum(bool(f.flag) for f in figures),
            "model_sentiment": row.sentiment,
            "sentiment": tone.sentiment,
            "sentiment_correction": tone.correction,
            "tone_contradiction": tone.contradiction,
        }
        if tone.correction and document is not None:
            grounder = _Grounder(sentences[row.doc_id], (chunks or {}).get(row.doc_id, []))
            index = grounder.find(-1, lambda text: bool(words_in(text) & set(tone.event_words)))
            update["sentiment_evidence"] = grounder.span(index) if index is not None else None
        labelled = labels.for_document(row.doc_id)
        if labelled is not None:
            agreement = score(labelled, [(e.name, e.kind) for e in entities], tone.sentiment)
            model = score(labelled, [(e.name, e.model_kind) for e in entities], row.sentiment)
            tone_miss = (
                []
                if agreement.tone_right
                else [f"tone: {tone.sentiment or 'none'} (expected {' or '.join(labelled.tone)})"]
            )
            update |= {
                "in_sample": True,
                "sample_entities": agreement.entities,
                "sample_entities_right": agreement.entities_right,
                "sample_tone_right": agreement.tone_right,
                "sample_entities_right_model": model.entities_right,
                "sample_tone_right_model": model.tone_right,
                "sample_misses": agreement.wrong_kinds + tone_miss,
            }
        reviewed.append(row.model_copy(update=update))
    return reviewed


class SampleAccuracy(BaseModel):
    """Agreement with the labelled sample over the documents of the sample whose signals are
    valid: of the reviewed signals (what later steps read) and of the model's own answers."""

    documents: int
    entities: int
    entity_kind_accuracy: float | None = Field(description="Reviewed kinds; None when no labelled entity.")
    tone_accuracy: float | None = Field(description="Reviewed tones; None when no sample document is valid.")
    entity_kind_accuracy_model: float | None = Field(default=None, description="The model's own kinds.")
    tone_accuracy_model: float | None = Field(default=None, description="The model's own tones.")


def sample_accuracy(rows: Sequence[DocumentSignals]) -> SampleAccuracy:
    scored = [r for r in rows if r.in_sample and r.status == "valid"]
    entities = sum(r.sample_entities for r in scored)

    def share(right: int, of: int) -> float | None:
        return round(right / of, 3) if of else None

    return SampleAccuracy(
        documents=len(scored),
        entities=entities,
        entity_kind_accuracy=share(sum(r.sample_entities_right for r in scored), entities),
        tone_accuracy=share(sum(r.sample_tone_right for r in scored), len(scored)),
        entity_kind_accuracy_model=share(sum(r.sample_entities_right_model for r in scored), entities),
        tone_accuracy_model=share(sum(r.sample_tone_right_model for r in scored), len(scored)),
    )


def extract_signals(run: LlmRun) -> Output[pd.DataFrame]:
    """The body of `signals`: the declared call per document, then every extracted item tied
    to the sentence it cites and reviewed for meaning."""
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
        tier=run.call.tier,
        max_tokens=run.call.max_tokens,
        partitions=[d.batch for d in documents],
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
    rows = review(rows, documents, by_doc)
    # Each batch's materialization describes its own documents and their calls, so that
    # adding them up over batches gives the run's totals; a batch whose files were all
    # quarantined (or that holds none) records zeros.
    by_batch: dict[str, list[DocumentSignals]] = {key: [] for key in context.partition_keys}
    for row in rows:
        by_batch.setdefault(row.batch, []).append(row)
    for key, batch_rows in by_batch.items():
        context.add_asset_metadata(signals_metadata(batch_rows), partition_key=key)
    summary = llm.ledger.summary()
    accuracy = sample_accuracy(rows)
    context.log.info(
        f"Signals: {sum(r.status == 'valid' for r in rows)} of {len(rows)} documents valid; "
        f"{sum(r.flagged_entities + r.flagged_figures for r in rows)} items flagged, "
        f"{sum(bool(r.tone_contradiction) for r in rows)} tones contradicted; the review corrected "
        f"{sum(r.corrected_entities for r in rows)} entity kinds and {sum(bool(r.sentiment_correction) for r in rows)} "
        "tones from the documents' own words; "
        f"{summary.requests} model requests, {summary.failed_requests} failed, {summary.cache_hits} from cache"
    )
    # The run's agreement with the labelled sample, on every partition it materialized:
    # a rate over the run's documents, not a per-document figure to be summed.
    run_metadata: dict[str, object] = {"prompt_version": run.prompt.version}
    if accuracy.documents:
        run_metadata |= {
            "run_sample_documents": accuracy.documents,
            "run_entity_kind_accuracy": accuracy.entity_kind_accuracy,
            "run_tone_accuracy": accuracy.tone_accuracy,
            "run_entity_kind_accuracy_model": accuracy.entity_kind_accuracy_model,
            "run_tone_accuracy_model": accuracy.tone_accuracy_model,
        }
    return Output(to_frame(rows, DocumentSignals), metadata=run_metadata)


# One fast-tier extraction per document; `extract_signals` grounds and reviews its answers.
# A bulk run (a new corpus, a changed prompt) may go through the provider's batch API.
EXTRACTION = LlmCall(
    prompt_file=Path(__file__).parent / "prompts" / "extract_signals.txt",
    answer=ExtractedSignals,
    tier="fast",
    max_tokens=512,
    batch=True,
)
SIGNALS = LlmAsset(
    name="signals",
    group="signals",
    description="Per-document structured signals (entities, events, key figures, sentiment), each with an "
    "evidence span.",
    call=EXTRACTION,
    rows=DocumentSignals,
    ins=("source_documents", "chunks"),
    partitions=DOCUMENT_BATCHES,
    version=3,  # bump when extract_signals changes what it stores
)
signals = SIGNALS.asset(extract_signals)


def signals_metadata(rows: list[DocumentSignals]) -> dict[str, object]:
    """One batch's figures; the model session adds that batch's usage."""
    valid = sum(r.status == "valid" for r in rows)
    return {
        "documents": len(rows),
        # Every document of the batch by its key, so that a search of the metadata finds it.
        "document_status": MetadataValue.json({r.document: r.status for r in rows}),
        "valid": valid,
        "validity_rate": round(valid / max(1, len(rows)), 3),
        "entities": sum(len(r.entities) for r in rows),
        "events": sum(len(r.events) for r in rows),
        "key_figures": sum(len(r.key_figures) for r in rows),
        "dropped_items": sum(r.dropped_items for r in rows),
        "flagged_entities": sum(r.flagged_entities for r in rows),
        "flagged_figures": sum(r.flagged_figures for r in rows),
        "tone_contradictions": sum(bool(r.tone_contradiction) for r in rows),
        **{
            f"corrected_to_{kind}": sum(e.kind == kind for r in rows for e in r.entities if e.correction)
            for kind in CORRECTED_KINDS
        },
        "corrected_tones": sum(bool(r.sentiment_correction) for r in rows),
        "sample_documents": sum(r.in_sample and r.status == "valid" for r in rows),
        "sample_entities": sum(r.sample_entities for r in rows if r.status == "valid"),
        "sample_entities_right": sum(r.sample_entities_right for r in rows if r.status == "valid"),
        "sample_tones_right": sum(r.sample_tone_right for r in rows if r.status == "valid"),
        "sample_entities_right_model": sum(r.sample_entities_right_model for r in rows if r.status == "valid"),
        "sample_tones_right_model": sum(r.sample_tone_right_model for r in rows if r.status == "valid"),
        "preview": MetadataValue.md(
            markdown_table(
                [
                    {
                        "document": r.title,
                        "status": r.status,
                        "entities": ", ".join(e.name for e in r.entities),
                        "figures": ", ".join(f"{f.label}: {f.value}" for f in r.key_figures),
                        "sentiment": r.sentiment,
                        "corrections": "; ".join(
                            [f"{e.name}: {e.correction}" for e in r.entities if e.correction]
                            + ([r.sentiment_correction] if r.sentiment_correction else [])
                        ),
                        "flags": "; ".join(
                            [e.flag for e in r.entities if e.flag]
                            + [f.flag for f in r.key_figures if f.flag]
                            + ([r.tone_contradiction] if r.tone_contradiction else [])
                        ),
                        "error": r.error,
                    }
                    for r in rows[:10]
                ]
            )
        ),
    }


# Said wherever the sample's figures are shown: the labels and the review's rules were written
# for the same bundled corpus, so the figures show agreement there, not accuracy elsewhere.
SAMPLE_CAVEAT = (
    "The labelled sample is the bundled corpus, the corpus the review's rules were written and checked against: "
    "its accuracies are not an independent evaluation, and on other documents only the flags and warnings apply."
)


@asset_check(
    asset="signals",
    blocking=True,
    description="Share of documents whose signals validated and grounded is at least min_signal_validity; on the "
    "documents of the labelled sample, the entity-kind and tone accuracy of the reviewed signals (the model's "
    "extraction after the document's own words corrected what they settle: what later steps read) are at least "
    "their floors. The model's own accuracies are reported beside them, not gated.",
)
def signal_validity(pipeline: PipelineConfig, signals: pd.DataFrame) -> AssetCheckResult:
    rows = from_frame(signals, DocumentSignals)
    total = len(rows)
    valid = sum(r.status == "valid" for r in rows)
    rate = valid / total if total else 0.0
    accuracy = sample_accuracy(rows)
    short = [
        f"reviewed {name} {value} under {floor}"
        for name, value, floor in (
            ("entity-kind accuracy", accuracy.entity_kind_accuracy, pipeline.min_entity_kind_accuracy),
            ("tone accuracy", accuracy.tone_accuracy, pipeline.min_tone_accuracy),
        )
        if value is not None and value < floor
    ]
    sample = (
        f"; on {accuracy.documents} labelled documents, reviewed signals: entity kinds "
        f"{accuracy.entity_kind_accuracy} (floor {pipeline.min_entity_kind_accuracy}), tone {accuracy.tone_accuracy} "
        f"(floor {pipeline.min_tone_accuracy}); the model's own: entity kinds {accuracy.entity_kind_accuracy_model}, "
        f"tone {accuracy.tone_accuracy_model}"
        if accuracy.documents
        else "; no document of the labelled sample"
    )
    failures = [{"title": r.title, "status": r.status, "error": r.error} for r in rows if r.status != "valid"]
    misses = [{"document": r.title, "misses": "; ".join(r.sample_misses)} for r in rows if r.sample_misses]
    corrections = [
        {"document": r.title, "model": f"{e.name} ({e.model_kind})", "reviewed": e.kind, "reason": e.correction}
        for r in rows
        for e in r.entities
        if e.correction
    ] + [
        {
            "document": r.title,
            "model": f"tone {r.model_sentiment}",
            "reviewed": r.sentiment,
            "reason": r.sentiment_correction,
        }
        for r in rows
        if r.sentiment_correction
    ]
    return AssetCheckResult(
        passed=rate >= pipeline.min_signal_validity and not short,
        severity=AssetCheckSeverity.ERROR,
        description=f"{valid} of {total} documents have valid, grounded signals{sample}"
        + (f": {', '.join(short)}" if short else ""),
        metadata={
            "validity_rate": round(rate, 3),
            "min_signal_validity": pipeline.min_signal_validity,
            "sample_documents": accuracy.documents,
            "sample_entities": accuracy.entities,
            "gated_on": "reviewed signals",
            "entity_kind_accuracy": accuracy.entity_kind_accuracy,
            "tone_accuracy": accuracy.tone_accuracy,
            "entity_kind_accuracy_model": accuracy.entity_kind_accuracy_model,
            "tone_accuracy_model": accuracy.tone_accuracy_model,
            "min_entity_kind_accuracy": pipeline.min_entity_kind_accuracy,
            "min_tone_accuracy": pipeline.min_tone_accuracy,
            "corrected_entities": sum(r.corrected_entities for r in rows),
            "corrected_tones": sum(bool(r.sentiment_correction) for r in rows),
            "sample_caveat": SAMPLE_CAVEAT,
            "not_valid": MetadataValue.md(markdown_table(failures[:10])),
            "sample_misses": MetadataValue.md(markdown_table(misses[:15])),
            "corrections": MetadataValue.md(markdown_table(corrections[:20])),
            **partition_results(
                (r.document, r.status == "valid", "; ".join(filter(None, [r.error or r.status, *r.sample_misses])))
                for r in rows
            ),
        },
    )


@asset_check(
    asset="signals",
    blocking=False,
    description="Warns when more than max_tone_contradiction_share of the documents with valid signals got a tone "
    "from the model that their own event words contradict (whether or not the review corrected it): how often the "
    "model misreads; lists the entities and key figures flagged for meaning.",
)
def signal_consistency(pipeline: PipelineConfig, signals: pd.DataFrame) -> AssetCheckResult:
    rows = [r for r in from_frame(signals, DocumentSignals) if r.status == "valid"]
    contradicted = [r for r in rows if r.tone_contradiction]
    share = len(contradicted) / len(rows) if rows else 0.0
    flags = [
        {"document": r.title, "item": item, "flag": flag}
        for r in rows
        for item, flag in [(f"{e.name} ({e.model_kind or e.kind})", e.flag) for e in r.entities]
        + [(f"{f.label}: {f.value}", f.flag) for f in r.key_figures]
        + [(f"tone {r.model_sentiment or r.sentiment}", r.tone_contradiction)]
        if flag
    ]
    return AssetCheckResult(
        passed=share <= pipeline.max_tone_contradiction_share,
        severity=AssetCheckSeverity.WARN,
        description=f"{len(contradicted)} of {len(rows)} documents have a tone their event words contradict; "
        f"{sum(r.flagged_entities for r in rows)} entities and {sum(r.flagged_figures for r in rows)} key figures flagged",
        metadata={
            "tone_contradiction_share": round(share, 3),
            "max_tone_contradiction_share": pipeline.max_tone_contradiction_share,
            "tone_contradictions": len(contradicted),
            "flagged_entities": sum(r.flagged_entities for r in rows),
            "flagged_figures": sum(r.flagged_figures for r in rows),
            "flags": MetadataValue.md(markdown_table(flags[:20])),
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
