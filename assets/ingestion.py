"""Ingestion: files on disk become source documents with stable ids, then chunks.

Both are partitioned by document (one partition per file). A document's id is the
hash of its bytes, so the same content keeps its id wherever it lives and an edited
file gets a new id and new chunk ids. A file that cannot be read as text is
quarantined with its reason; it never stops the rest of the corpus.
"""


import hashlib
import re
from pathlib import Path
from typing import Iterable, Literal, Sequence

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    asset_check,
    multi_asset,
)
from pydantic import BaseModel, Field

from assets.config import PipelineConfig
from assets.documents import DOCUMENTS, PARTITION_COLUMN, discover_files, path_for, per_document, sha256_of
from assets.frames import from_frame, table_output, to_frame
from assets.previews import markdown_table
from assets.text import split_sentences

GROUP = "ingestion"
CODE_VERSION = "2"
TEXT_SUFFIXES = {".md", ".txt", ".markdown", ".text", ""}

QuarantineKind = Literal["empty", "binary", "encoding", "too_large", "unreadable", "duplicate"]


_PARTITION = Field(default="", description="The documents partition: the file's key in its watched folder.")


class SourceDocument(BaseModel):
    document: str = _PARTITION
    doc_id: str = Field(description="First 16 hex digits of the SHA-256 of the file's bytes.")
    path: str = Field(description="Where the file was read from.")
    title: str
    published: str = Field(description="Date from the document's 'Date:' line, or empty.")
    text: str = Field(description="Body text; evidence offsets point into it.")
    n_chars: int


class QuarantinedDocument(BaseModel):
    document: str = _PARTITION
    path: str
    kind: QuarantineKind
    reason: str
    n_bytes: int
    content_sha256: str


class Chunk(BaseModel):
    document: str = _PARTITION
    chunk_id: str = Field(description="<doc_id>-<position>: stable while the document is unchanged.")
    doc_id: str
    position: int
    text: str
    char_start: int
    char_end: int


def parse_document(path: Path, max_bytes: int, document: str = "") -> SourceDocument | QuarantinedDocument:
    """Read one file as a UTF-8 text document, or say precisely why it cannot be."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return QuarantinedDocument(
            document=document, path=str(path), kind="unreadable", reason=f"cannot read file: {exc}",
            n_bytes=0, content_sha256="",
        )
    digest = hashlib.sha256(raw).hexdigest()

    def quarantine(kind: QuarantineKind, reason: str) -> QuarantinedDocument:
        return QuarantinedDocument(
            document=document, path=str(path), kind=kind, reason=reason, n_bytes=len(raw), content_sha256=digest
        )

    if len(raw) > max_bytes:
        return quarantine("too_large", f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    if b"\x00" in raw[:8192]:
        return quarantine("binary", "binary content (NUL bytes); only UTF-8 text is supported")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return quarantine(
            "encoding", f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        )
    if not text.strip():
        return quarantine("empty", "no text in file")
    title, published, body = _split_header(text, fallback_title=path.stem)
    if not body.strip():
        return quarantine("empty", "header only, no body text")
    return SourceDocument(
        document=document, doc_id=digest[:16], path=str(path), title=title, published=published, text=body, n_chars=len(body)
    )


def _split_header(text: str, fallback_title: str) -> tuple[str, str, str]:
    lines = text.strip().splitlines()
    title, published = fallback_title, ""
    if lines and lines[0].startswith("#"):
        title = lines.pop(0).lstrip("#").strip()
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and (match := re.match(r"(?i)date:\s*(\S+)", lines[0])):
        published = match.group(1)
        lines.pop(0)
    return title, published, "\n".join(lines).strip()


def load_corpus(
    directories: Iterable[Path], max_bytes: int = 2_000_000
) -> tuple[list[SourceDocument], list[QuarantinedDocument]]:
    """Every file under the directories, parsed; identical contents are kept once."""
    documents: dict[str, SourceDocument] = {}
    quarantined: list[QuarantinedDocument] = []
    for path in discover_files(directories):
        parsed = parse_document(path, max_bytes)
        if isinstance(parsed, QuarantinedDocument):
            quarantined.append(parsed)
        elif parsed.doc_id in documents:
            quarantined.append(
                QuarantinedDocument(
                    path=str(path),
                    kind="duplicate",
                    reason=f"same content as {documents[parsed.doc_id].path}",
                    n_bytes=parsed.n_chars,
                    content_sha256=parsed.doc_id,
                )
            )
        else:
            documents[parsed.doc_id] = parsed
    return list(documents.values()), quarantined


def chunk_document(document: SourceDocument, target_chars: int) -> list[Chunk]:
    """Whole sentences grouped up to `target_chars`, so evidence never straddles a cut."""
    chunks: list[Chunk] = []
    group: list = []
    for sentence in split_sentences(document.text):
        if group and sentence.end - group[0].start > target_chars:
            chunks.append(_chunk(document, len(chunks), group))
            group = []
        group.append(sentence)
    if group:
        chunks.append(_chunk(document, len(chunks), group))
    return chunks


def _chunk(document: SourceDocument, position: int, sentences: list) -> Chunk:
    start, end = sentences[0].start, sentences[-1].end
    return Chunk(
        document=document.document,
        chunk_id=f"{document.doc_id}-{position:03d}",
        doc_id=document.doc_id,
        position=position,
        text=document.text[start:end],
        char_start=start,
        char_end=end,
    )


def ingest_documents(
    pipeline: PipelineConfig, keys: Sequence[str], registered: Sequence[str]
) -> tuple[list[SourceDocument], list[QuarantinedDocument]]:
    """Parse the files of `keys`. A file whose content an earlier registered partition
    holds is quarantined as a duplicate, so one text never yields two sets of chunk ids."""
    earlier = _EarlierCopies(pipeline, registered)
    documents: list[SourceDocument] = []
    quarantined: list[QuarantinedDocument] = []
    for key in keys:
        try:
            path = path_for(pipeline, key)
        except ValueError as exc:
            quarantined.append(
                QuarantinedDocument(document=key, path=key, kind="unreadable", reason=str(exc), n_bytes=0, content_sha256="")
            )
            continue
        parsed = parse_document(path, pipeline.max_document_bytes, key)
        if isinstance(parsed, SourceDocument) and (original := earlier.find(key, path)):
            parsed = QuarantinedDocument(
                document=key,
                path=str(path),
                kind="duplicate",
                reason=f"same content as {original}",
                n_bytes=path.stat().st_size,
                content_sha256=sha256_of(path),
            )
        (quarantined if isinstance(parsed, QuarantinedDocument) else documents).append(parsed)
    return documents, quarantined


class _EarlierCopies:
    """Finds a registered partition, earlier in partition order, with the same bytes.

    Only files of equal size are hashed, so a run over one document in a corpus of
    thousands reads one file's worth of candidates, not the corpus.
    """

    def __init__(self, pipeline: PipelineConfig, registered: Sequence[str]):
        self.order = {key: i for i, key in enumerate(registered)}
        self.sizes: dict[str, tuple[Path, int]] = {}
        for key in registered:
            try:
                path = path_for(pipeline, key)
                self.sizes[key] = (path, path.stat().st_size)
            except (ValueError, OSError):
                continue
        self.hashes: dict[Path, str] = {}

    def _hash(self, path: Path) -> str:
        if path not in self.hashes:
            self.hashes[path] = sha256_of(path)
        return self.hashes[path]

    def find(self, key: str, path: Path) -> str | None:
        size = path.stat().st_size
        position = self.order.get(key, len(self.order))
        for other, (other_path, other_size) in self.sizes.items():
            if other_size == size and self.order[other] < position and self._hash(other_path) == self._hash(path):
                return other
        return None


@multi_asset(
    group_name=GROUP,
    code_version=CODE_VERSION,
    **per_document(),
    outs={
        "source_documents": AssetOut(
            description="Parsed text documents, one row per documents partition (file), "
            "keyed by content hash.",
            **table_output(SourceDocument, "pandas", partition_expr=PARTITION_COLUMN),
        ),
        "quarantined_documents": AssetOut(
            description="Files that could not be read as text documents, each with the reason.",
            **table_output(QuarantinedDocument, "pandas", partition_expr=PARTITION_COLUMN),
        ),
    },
)
def source_documents(context: AssetExecutionContext, pipeline: PipelineConfig):
    keys = context.partition_keys
    registered = context.instance.get_dynamic_partitions(DOCUMENTS.name)
    documents, quarantined = ingest_documents(pipeline, keys, registered)
    for bad in quarantined:
        context.log.warning(f"Quarantined {bad.document}: {bad.reason}")
    yield Output(
        to_frame(documents, SourceDocument),
        output_name="source_documents",
        metadata={
            "documents": len(documents),
            "quarantined": len(quarantined),
            "partitions_in_run": len(keys),
            "sources": MetadataValue.json(sorted({k.partition("/")[0] for k in keys})),
            "preview": MetadataValue.md(
                markdown_table(
                    [{"document": d.document, "title": d.title, "date": d.published, "chars": d.n_chars} for d in documents[:10]]
                )
            ),
        },
    )
    yield Output(
        to_frame(quarantined, QuarantinedDocument),
        output_name="quarantined_documents",
        metadata={
            "quarantined": len(quarantined),
            "preview": MetadataValue.md(
                markdown_table([{"document": q.document, "reason": q.reason} for q in quarantined])
            ),
        },
    )


@asset(
    group_name=GROUP,
    code_version=CODE_VERSION,
    **per_document(),
    **table_output(Chunk, "pandas", partition_expr=PARTITION_COLUMN),
)
def chunks(pipeline: PipelineConfig, source_documents: pd.DataFrame) -> Output[pd.DataFrame]:
    """Sentence-aligned passages of each document: the unit the retrieval index stores."""
    documents = from_frame(source_documents, SourceDocument)
    rows = [c for d in documents for c in chunk_document(d, pipeline.chunk_chars)]
    return Output(
        to_frame(rows, Chunk),
        metadata={
            "chunks": len(rows),
            "documents": len(documents),
            "mean_chars": round(sum(len(c.text) for c in rows) / max(1, len(rows)), 1),
            "preview": MetadataValue.md(
                markdown_table([{"chunk_id": c.chunk_id, "text": c.text} for c in rows[:5]])
            ),
        },
    )


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
    share = failures / files if files else 1.0
    return AssetCheckResult(
        passed=len(source_documents) > 0 and share <= pipeline.max_quarantine_share,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "documents": len(source_documents),
            "parse_failures": failures,
            "failure_share": round(share, 3),
            "max_quarantine_share": pipeline.max_quarantine_share,
        },
        description=f"{failures} of {files} files failed to parse",
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
