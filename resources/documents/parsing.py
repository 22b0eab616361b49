"""Parsing: a file on disk becomes a source document with a stable id, or a quarantine record.

A document's id is the hash of its bytes, so the same content keeps its id wherever it
lives and an edited file gets a new id and new chunk ids. A file that cannot be read as
text is quarantined with its reason; it never stops the rest of a corpus.

Only prose is read: the file type is decided by extension and by content (a `.md` holding
JSON is data, not prose), and structured formats are quarantined rather than read as
sentences. Text is cut at `max_chars`, with what was cut recorded. Text that reads as
instructions to a model is flagged (resources/guardrails/prompt_injection.py), and a
document with nothing else in it is quarantined, since none of it may become evidence.
"""

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

from resources.documents.chunking import evidence_sentences
from resources.documents.files import UnsafeFile, discover_files, read_regular_file
from resources.documents.records import QuarantinedDocument, QuarantineKind, SourceDocument
from resources.guardrails.prompt_injection import screen, screen_title

TEXT_SUFFIXES = {".md", ".txt", ".markdown", ".text", ""}
MAX_DOCUMENT_CHARS = 100_000


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
