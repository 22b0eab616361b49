"""Ingestion: files on disk become source documents with stable ids, then chunks.

Both are partitioned by document (one partition per file). A document's id is the
hash of its bytes, so the same content keeps its id wherever it lives and an edited
file gets a new id and new chunk ids. A file that cannot be read as text is
quarantined with its reason; it never stops the rest of the corpus.

Only prose is ingested: the file type is decided by extension and by content (a `.md`
holding JSON is data, not prose), and structured formats are quarantined rather than
read as sentences. Text is cut at `max_document_chars` and chunks at
`max_chunk_chars`, with what was cut recorded. Text that reads as instructions to a
model is flagged (resources/guardrails/prompt_injection.py) and left out of the chunks, so it never becomes
evidence.
"""

import hashlib
import json
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
    BackfillPolicy,
    MetadataValue,
    Output,
    asset,
    asset_check,
    multi_asset,
)
from pydantic import BaseModel, Field

from assets.components.check_results import share_within_limit
from assets.components.partitions import DOCUMENTS
from resources import ModelResource
from resources.documents.files import (
    PARTITION_COLUMN,
    UnsafeFile,
    check_entry,
    discover_files,
    locate,
    read_regular_file,
    sha256_of,
)
from resources.documents.text import Span, split_sentences
from resources.gateway.model_session import ModelSession
from resources.guardrails.prompt_injection import FlaggedSpan, screen, screen_title, screen_with_model, unflagged
from resources.markdown_tables import markdown_table
from resources.pipeline_config import PipelineConfig
from resources.tables import OWNERS, WAREHOUSE, from_frame, table_metadata, to_frame

GROUP = "ingestion"
CODE_VERSION = "3"
TEXT_SUFFIXES = {".md", ".txt", ".markdown", ".text", ""}
MAX_DOCUMENT_CHARS = 100_000
MAX_CHUNK_CHARS = 1_500

QuarantineKind = Literal[
    "empty",
    "binary",
    "encoding",
    "too_large",
    "unreadable",
    "duplicate",
    "unsafe_path",
    "not_regular_file",
    "unsupported_type",
    "injection",
]


_PARTITION = Field(default="", description="The documents partition: the file's key in its watched folder.")


class SourceDocument(BaseModel):
    document: str = _PARTITION
    doc_id: str = Field(description="First 16 hex digits of the SHA-256 of the file's bytes.")
    path: str = Field(description="Where the file was read from.")
    title: str
    published: str = Field(description="Date from the document's 'Date:' line, or empty.")
    text: str = Field(description="Body text; evidence offsets point into it.")
    n_chars: int
    cut_chars: int = Field(default=0, description="Characters cut off the end at max_document_chars.")
    flagged: list[FlaggedSpan] = Field(
        default=[], description="Text that reads as instructions to a model: kept out of chunks and signals."
    )
    screening_error: str = Field(default="", description="Why the injection classifier could not screen a suspect.")


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


def parse_document(
    path: Path,
    max_bytes: int,
    document: str = "",
    *,
    root: Path | None = None,
    max_chars: int = MAX_DOCUMENT_CHARS,
) -> SourceDocument | QuarantinedDocument:
    """Read one file inside `root` (default: its own folder) as a UTF-8 prose document,
    or say precisely why it cannot be; text that instructs a model is flagged."""
    root = root if root is not None else path.parent

    def refuse(kind: QuarantineKind, reason: str, n_bytes: int = 0, digest: str = "") -> QuarantinedDocument:
        return QuarantinedDocument(
            document=document, path=str(path), kind=kind, reason=reason, n_bytes=n_bytes, content_sha256=digest
        )

    try:
        raw, size = read_regular_file(root, path, max_bytes)
    except UnsafeFile as unsafe:
        return refuse(unsafe.kind, unsafe.reason)  # type: ignore[arg-type]
    if size > max_bytes or len(raw) > max_bytes:
        return refuse("too_large", f"{max(size, len(raw))} bytes exceeds the limit of {max_bytes}", max(size, len(raw)))
    digest = hashlib.sha256(raw).hexdigest()

    def quarantine(kind: QuarantineKind, reason: str) -> QuarantinedDocument:
        return refuse(kind, reason, len(raw), digest)

    suffix = path.suffix.lower()
    if b"\x00" in raw[:8192]:
        kind = f" in a {suffix} file" if suffix else ""
        return quarantine("binary", f"binary content (NUL bytes){kind}; only UTF-8 text is supported")
    if suffix not in TEXT_SUFFIXES:
        return quarantine(
            "unsupported_type",
            f"{suffix} files are not ingested: only prose ({', '.join(sorted(s for s in TEXT_SUFFIXES if s))} or no extension)",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return quarantine("encoding", f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}")
    if not text.strip():
        return quarantine("empty", "no text in file")
    if structured := _structured_content(text):
        return quarantine(
            "unsupported_type", f"{structured} in a {suffix or 'extensionless'} file: structured data, not prose"
        )
    title, published, body = _split_header(text, fallback_title=path.stem)
    if not body.strip():
        return quarantine("empty", "header only, no body text")
    cut = max(0, len(body) - max_chars)
    body = body[:max_chars] if cut else body
    flagged = screen(body).flagged
    if bad_title := screen_title(title):
        flagged, title = [bad_title, *flagged], path.stem
    parsed = SourceDocument(
        document=document,
        doc_id=digest[:16],
        path=str(path),
        title=title,
        published=published,
        text=body,
        n_chars=len(body),
        cut_chars=cut,
        flagged=flagged,
    )
    if not evidence_sentences(parsed):
        return quarantine("injection", f"every sentence reads as instructions to a model ({flagged[-1].reason})")
    return parsed


def _structured_content(text: str) -> str:
    """ "JSON" when prose-named text is really a JSON document, else ""."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return ""
    try:
        json.loads(stripped)
    except RecursionError:
        return "deeply nested JSON"
    except ValueError:
        return ""
    return "JSON"


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
    for root, path in discover_files(directories):
        parsed = parse_document(path, max_bytes, root=root)
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


def evidence_sentences(document: SourceDocument, max_chars: int = MAX_CHUNK_CHARS) -> list[Span]:
    """The sentences that may be evidence: unflagged, and none longer than `max_chars`
    (a longer one is split at whitespace, or hard-split where there is none)."""
    return [
        piece for s in unflagged(split_sentences(document.text), document.flagged) for piece in _pieces(s, max_chars)
    ]


def _pieces(sentence: Span, limit: int) -> list[Span]:
    if len(sentence.text) <= limit:
        return [sentence]
    text, pieces, position = sentence.text, [], 0
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        end = len(text)
        if end - position > limit:
            window = text[position : position + limit + 1]
            cut = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
            end = position + (cut if cut > 0 else limit)
        piece = text[position:end].rstrip()
        pieces.append(Span(piece, sentence.start + position, sentence.start + position + len(piece)))
        position = end
    return pieces


def chunk_document(document: SourceDocument, target_chars: int, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """Whole sentences grouped up to `target_chars`, so evidence never straddles a cut.

    Only evidence sentences are chunked: a flagged span ends the group before it, so no
    chunk holds flagged text, and no chunk is longer than `max_chars`.
    """
    limit = min(target_chars, max_chars)
    allowed = {(s.start, s.end) for s in unflagged(split_sentences(document.text), document.flagged)}
    chunks: list[Chunk] = []
    group: list = []
    for sentence in split_sentences(document.text):
        if (sentence.start, sentence.end) not in allowed:
            if group:
                chunks.append(_chunk(document, len(chunks), group))
                group = []
            continue
        for piece in _pieces(sentence, max_chars):
            if group and piece.end - group[0].start > limit:
                chunks.append(_chunk(document, len(chunks), group))
                group = []
            group.append(piece)
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
            root, path = locate(pipeline, key)
        except ValueError as exc:
            quarantined.append(
                QuarantinedDocument(
                    document=key, path=key, kind="unsafe_path", reason=str(exc), n_bytes=0, content_sha256=""
                )
            )
            continue
        parsed = parse_document(
            path, pipeline.max_document_bytes, key, root=root, max_chars=pipeline.max_document_chars
        )
        if isinstance(parsed, SourceDocument) and (original := earlier.find(key, root, path)):
            parsed = QuarantinedDocument(
                document=key,
                path=str(path),
                kind="duplicate",
                reason=f"same content as {original}",
                n_bytes=earlier.size(root, path),
                content_sha256=earlier.hash(root, path),
            )
        (quarantined if isinstance(parsed, QuarantinedDocument) else documents).append(parsed)
    return documents, quarantined


class _EarlierCopies:
    """Finds a registered partition, earlier in partition order, with the same bytes.

    Only regular files inside their folders and of equal size are hashed, each once, so a
    run over one document in a corpus of thousands reads one file's worth of candidates,
    not the corpus, a run over all of them costs one lookup per file (not a scan of the
    earlier ones), and nothing opens a FIFO or follows a link out of a folder.
    """

    def __init__(self, pipeline: PipelineConfig, registered: Sequence[str]):
        self.order = {key: i for i, key in enumerate(registered)}
        # size -> registered files of that size, in partition order: a lookup, not a scan
        self.by_size: dict[int, list[tuple[str, Path, Path]]] = {}
        for key in registered:
            try:
                root, path = locate(pipeline, key)
                self.by_size.setdefault(check_entry(root, path).st_size, []).append((key, root, path))
            except (ValueError, UnsafeFile):
                continue
        self.hashes: dict[Path, str] = {}
        self.first: dict[int, dict[str, str]] = {}

    def hash(self, root: Path, path: Path) -> str:
        if path not in self.hashes:
            try:
                self.hashes[path] = sha256_of(root, path)
            except UnsafeFile as unsafe:
                self.hashes[path] = unsafe.marker
        return self.hashes[path]

    def size(self, root: Path, path: Path) -> int:
        try:
            return check_entry(root, path).st_size
        except UnsafeFile:
            return 0

    def find(self, key: str, root: Path, path: Path) -> str | None:
        position = self.order.get(key, len(self.order))
        first = self._first_by_hash(self.size(root, path)).get(self.hash(root, path))
        return first if first is not None and self.order[first] < position else None

    def _first_by_hash(self, size: int) -> dict[str, str]:
        """The earliest registered file per content hash among files of `size` (hashed once)."""
        if size not in self.first:
            first: dict[str, str] = {}
            for other, other_root, other_path in self.by_size.get(size, []):
                first.setdefault(self.hash(other_root, other_path), other)
            self.first[size] = first
        return self.first[size]


def _screen_with_model(
    pipeline: PipelineConfig, llm: ModelSession, documents: list[SourceDocument]
) -> tuple[list[SourceDocument], list[QuarantinedDocument], list[str]]:
    """The classifier pass over suspect sentences, when screening with a model is on."""
    if not pipeline.screen_with_model or not documents:
        return documents, [], []
    screened, errors = screen_with_model(llm.model, documents, llm.ledger)
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
    group_name=GROUP,
    code_version=CODE_VERSION,
    partitions_def=DOCUMENTS,
    backfill_policy=BackfillPolicy.single_run(),
    outs={
        "source_documents": AssetOut(
            description="Parsed text documents, one row per documents partition (file), keyed by content hash.",
            io_manager_key=WAREHOUSE,
            kinds={"duckdb", "pandas"},
            owners=OWNERS,
            metadata=table_metadata(SourceDocument, partition_expr=PARTITION_COLUMN),
        ),
        "quarantined_documents": AssetOut(
            description="Files that could not be read as text documents, each with the reason.",
            io_manager_key=WAREHOUSE,
            kinds={"duckdb", "pandas"},
            owners=OWNERS,
            metadata=table_metadata(QuarantinedDocument, partition_expr=PARTITION_COLUMN),
        ),
    },
)
def source_documents(context: AssetExecutionContext, pipeline: PipelineConfig, model: ModelResource):
    keys = context.partition_keys
    registered = context.instance.get_dynamic_partitions(DOCUMENTS.name)
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
    # Each partition's materializations describe that file alone, so that what the UI shows
    # for a document (and any sum over documents) is that document's, not the run's.
    by_key = {d.document: d for d in documents}
    quarantined_by_key = {q.document: q for q in quarantined}
    for key in keys:
        context.add_asset_metadata(
            document_metadata(by_key.get(key), quarantined_by_key.get(key)),
            asset_key="source_documents",
            partition_key=key,
        )
        context.add_asset_metadata(
            quarantine_metadata(quarantined_by_key.get(key)), asset_key="quarantined_documents", partition_key=key
        )
    context.log.info(
        f"Ingested {len(documents)} of {len(keys)} files; {len(quarantined)} quarantined, "
        f"{sum(len(d.flagged) for d in documents)} spans flagged as instructions to a model"
    )
    yield Output(to_frame(documents, SourceDocument), output_name="source_documents")
    yield Output(to_frame(quarantined, QuarantinedDocument), output_name="quarantined_documents")


CONTENT_HASH = "content_hash"


def document_metadata(document: SourceDocument | None, quarantined: QuarantinedDocument | None) -> dict[str, object]:
    """A partition's metadata. `content_hash` (16 hex digits of the SHA-256 of the bytes read)
    is what the run planner compares with the file now, to skip documents that did not change."""
    if document is None:
        return {
            "documents": 0,
            "status": f"quarantined: {quarantined.kind}" if quarantined else "no file",
            CONTENT_HASH: quarantined.content_sha256[:16] if quarantined else "",
        }
    return {
        "documents": 1,
        "status": "ingested",
        CONTENT_HASH: document.doc_id,
        "title": document.title,
        "published": document.published or "(no date)",
        "chars": document.n_chars,
        "cut_chars": document.cut_chars,
        "flagged_spans": len(document.flagged),
        "flagged": MetadataValue.md(
            markdown_table(
                [{"start": f.start, "end": f.end, "reason": f.reason, "text": f.text[:160]} for f in document.flagged]
            )
            if document.flagged
            else "_(no text flagged as instructions to a model)_"
        ),
        "screening_error": document.screening_error,
    }


def quarantine_metadata(quarantined: QuarantinedDocument | None) -> dict[str, object]:
    if quarantined is None:
        return {"quarantined": 0}
    return {"quarantined": 1, "kind": quarantined.kind, "reason": quarantined.reason, "bytes": quarantined.n_bytes}


@asset(
    group_name=GROUP,
    code_version=CODE_VERSION,
    partitions_def=DOCUMENTS,
    backfill_policy=BackfillPolicy.single_run(),
    io_manager_key=WAREHOUSE,
    kinds={"duckdb", "pandas"},
    owners=OWNERS,
    metadata=table_metadata(Chunk, partition_expr=PARTITION_COLUMN),
)
def chunks(
    context: AssetExecutionContext, pipeline: PipelineConfig, source_documents: pd.DataFrame
) -> Output[pd.DataFrame]:
    """Sentence-aligned passages of each document: the unit the retrieval index stores."""
    documents = from_frame(source_documents, SourceDocument)
    per_key: dict[str, list[Chunk]] = {key: [] for key in context.partition_keys}
    for document in documents:
        per_key[document.document] = chunk_document(document, pipeline.chunk_chars, pipeline.max_chunk_chars)
    for key, rows in per_key.items():
        context.add_asset_metadata(
            {
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
