"""Ingestion: files on disk become source documents with stable ids, then chunks.

Both are partitioned by document batch (resources/documents/batches.py): a run over a
batch ingests every registered file whose key hashes to it, and each row names its
document and its batch. A document's id is the
hash of its bytes, so the same content keeps its id wherever it lives and an edited
file gets a new id and new chunk ids. A file that cannot be read as text is
quarantined with its reason; it never stops the rest of the corpus.

Only prose is ingested: the file type is decided by extension and by content (a `.md`
holding JSON is data, not prose), and structured formats are quarantined rather than
read as sentences. Text is cut at `max_document_chars` and chunks at
`max_chunk_chars`, with what was cut recorded. Text that reads as instructions to a
model is flagged (resources/guardrails/prompt_injection.py) and left out of the chunks, so it never becomes
evidence. How a file is parsed and a document chunked is the documents library's
(resources/documents/parsing.py, chunking.py), which everything that reads a corpus shares.
"""

from dataclasses import replace

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
    multi_asset,
)

from assets.components.asset_spec import PipelineAssetSpec, multi_asset_keywords
from assets.components.check_results import share_within_limit
from assets.components.partitions import DOCUMENT_BATCHES, DOCUMENTS
from resources import ModelResource, ModelSession
from resources.documents.batches import in_batches
from resources.documents.chunking import Chunk, chunk_document, evidence_sentences
from resources.documents.intake import ingest_documents
from resources.documents.records import QuarantinedDocument, SourceDocument
from resources.guardrails.prompt_injection import screen_with_model
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import PipelineConfig
from resources.tables import from_frame, to_frame

GROUP = "ingestion"
CODE_VERSION = "3"
# A table of the ingestion, one row per document, partitioned by the document's batch.
DOCUMENT_TABLE = PipelineAssetSpec(
    group=GROUP, code_version=CODE_VERSION, partitions=DOCUMENT_BATCHES, kinds={"pandas"}
)


def _screen_with_model(
    pipeline: PipelineConfig, llm: ModelSession, documents: list[SourceDocument]
) -> tuple[list[SourceDocument], list[QuarantinedDocument], list[str]]:
    """The classifier pass over suspect sentences, when screening with a model is on."""
    if not pipeline.screen_with_model or not documents:
        return documents, [], []
    screened, errors = screen_with_model(llm, documents)
    kept, injected = [], []
    for document in screened:
        if evidence_sentences(document):
            kept.append(document)
        else:
            injected.append(
                QuarantinedDocument(
                    document=document.document,
                    path=document.path,
                    kind="injection",
                    reason="every sentence reads as instructions to a model (classifier)",
                    n_bytes=len(document.text.encode()),
                    content_sha256="",
                )
            )
    return kept, injected, errors


@multi_asset(
    **multi_asset_keywords(
        {
            "source_documents": replace(
                DOCUMENT_TABLE,
                rows=SourceDocument,
                description="Parsed text documents, one row per file, keyed by content hash; partitioned by batch.",
            ),
            "quarantined_documents": replace(
                DOCUMENT_TABLE,
                rows=QuarantinedDocument,
                description="Files that could not be read as text documents, each with the reason.",
            ),
        }
    )
)
def source_documents(context: AssetExecutionContext, pipeline: PipelineConfig, model: ModelResource):
    registered = context.instance.get_dynamic_partitions(DOCUMENTS.name)
    keys = in_batches(registered, context.partition_keys)
    documents, quarantined = ingest_documents(pipeline, keys, registered)
    # The screening calls' figures go on each document's own source_documents materialization.
    with model.session(context, asset="source_documents") as llm:
        documents, injected, screening_errors = _screen_with_model(pipeline, llm, documents)
    quarantined = sorted([*quarantined, *injected], key=lambda q: q.document)
    for bad in quarantined:
        context.log.warning(f"Quarantined {bad.document}: {bad.reason}")
    for document in documents:
        if document.cut_chars:
            context.log.warning(
                f"Cut {document.document}: {document.cut_chars} characters beyond max_document_chars={pipeline.max_document_chars}"
            )
        for span in document.flagged:
            context.log.warning(f"Flagged in {document.document} [{span.start}:{span.end}] {span.reason}")
    for error in screening_errors:
        context.log.warning(f"Injection screening failed, heuristics stand: {error}")
    # Each batch's materialization describes its own files, so that what the UI shows for a
    # batch (and any sum over batches) is that batch's, not the run's.
    for batch in context.partition_keys:
        mine = [d for d in documents if d.batch == batch]
        held = [q for q in quarantined if q.batch == batch]
        context.add_asset_metadata(batch_metadata(mine, held), asset_key="source_documents", partition_key=batch)
        context.add_asset_metadata(quarantine_metadata(held), asset_key="quarantined_documents", partition_key=batch)
    context.log.info(
        f"Ingested {len(documents)} of {len(keys)} files; {len(quarantined)} quarantined, "
        f"{sum(len(d.flagged) for d in documents)} spans flagged as instructions to a model"
    )
    yield Output(to_frame(documents, SourceDocument), output_name="source_documents")
    yield Output(to_frame(quarantined, QuarantinedDocument), output_name="quarantined_documents")


# What the run planner compares with the files now, to skip batches whose files did not
# change: per document key, the first 16 hex digits of the SHA-256 of the bytes read (""
# when the file could not be read at all).
CONTENT_HASHES = "content_hashes"


def batch_metadata(documents: list[SourceDocument], quarantined: list[QuarantinedDocument]) -> dict[str, object]:
    """A batch's metadata: its counts, and every document's key with its content hash and status."""
    hashes = {d.document: d.doc_id for d in documents} | {q.document: q.content_sha256[:16] for q in quarantined}
    status = {d.document: "ingested" for d in documents} | {q.document: f"quarantined: {q.kind}" for q in quarantined}
    flagged = [(d, f) for d in documents for f in d.flagged]
    return {
        "documents": len(documents),
        "quarantined": len(quarantined),
        CONTENT_HASHES: MetadataValue.json(dict(sorted(hashes.items()))),
        "document_status": MetadataValue.json(dict(sorted(status.items()))),
        "chars": sum(d.n_chars for d in documents),
        "cut_chars": sum(d.cut_chars for d in documents),
        "flagged_spans": len(flagged),
        "flagged": MetadataValue.md(
            markdown_table(
                [
                    {"document": d.document, "start": f.start, "end": f.end, "reason": f.reason, "text": f.text[:160]}
                    for d, f in flagged[:20]
                ]
            )
            if flagged
            else "_(no text flagged as instructions to a model)_"
        ),
        "screening_errors": sum(bool(d.screening_error) for d in documents),
        "preview": MetadataValue.md(
            markdown_table(
                [
                    {"document": d.document, "title": d.title, "published": d.published or "(no date)"}
                    for d in documents[:10]
                ]
            )
        ),
    }


def quarantine_metadata(quarantined: list[QuarantinedDocument]) -> dict[str, object]:
    return {
        "quarantined": len(quarantined),
        "reasons": MetadataValue.md(
            markdown_table(
                [{"document": q.document, "kind": q.kind, "reason": q.reason, "bytes": q.n_bytes} for q in quarantined]
            )
            if quarantined
            else "_(nothing quarantined)_"
        ),
    }


@asset(**replace(DOCUMENT_TABLE, rows=Chunk).asset_keywords())
def chunks(
    context: AssetExecutionContext, pipeline: PipelineConfig, source_documents: pd.DataFrame
) -> Output[pd.DataFrame]:
    """Sentence-aligned passages of each document: the unit the retrieval index stores."""
    documents = from_frame(source_documents, SourceDocument)
    per_key: dict[str, list[Chunk]] = {key: [] for key in context.partition_keys}
    for document in documents:
        per_key.setdefault(document.batch, []).extend(
            chunk_document(document, pipeline.chunk_chars, pipeline.max_chunk_chars)
        )
    for key, rows in per_key.items():
        context.add_asset_metadata(
            {
                "documents": len({c.document for c in rows}),
                "chunks": len(rows),
                "mean_chars": round(sum(len(c.text) for c in rows) / max(1, len(rows)), 1),
                "preview": MetadataValue.md(
                    markdown_table([{"chunk_id": c.chunk_id, "text": c.text} for c in rows[:5]])
                ),
            },
            partition_key=key,
        )
    return Output(to_frame([c for rows in per_key.values() for c in rows], Chunk))


@asset_check(
    asset="source_documents",
    blocking=True,
    additional_ins={"quarantined_documents": AssetIn("quarantined_documents")},
    description="Enough of the corpus parsed: at least one document, and parse failures "
    "no more than max_quarantine_share of the files.",
)
def corpus_parsed(
    pipeline: PipelineConfig, source_documents: pd.DataFrame, quarantined_documents: pd.DataFrame
) -> AssetCheckResult:
    failures = int((quarantined_documents["kind"] != "duplicate").sum()) if len(quarantined_documents) else 0
    files = len(source_documents) + failures
    return share_within_limit(
        failures,
        files,
        pipeline.max_quarantine_share,
        blocking=True,
        description=f"{failures} of {files} files failed to parse",
        share_key="failure_share",
        limit_key="max_quarantine_share",
        empty_passes=False,
        requires=len(source_documents) > 0,
        metadata={"documents": len(source_documents), "parse_failures": failures},
    )


@asset_check(
    asset="chunks",
    blocking=True,
    additional_ins={"source_documents": AssetIn("source_documents")},
    description="Every document has at least one chunk and chunk ids are unique.",
)
def every_document_chunked(chunks: pd.DataFrame, source_documents: pd.DataFrame) -> AssetCheckResult:
    missing = sorted(set(source_documents["doc_id"]) - set(chunks["doc_id"]))
    duplicated = int(chunks["chunk_id"].duplicated().sum())
    return AssetCheckResult(
        passed=not missing and duplicated == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "documents_without_chunks": MetadataValue.json(missing[:20]),
            "duplicate_chunk_ids": duplicated,
        },
    )
