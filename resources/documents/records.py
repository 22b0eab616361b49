"""A file as ingestion records it: a source document with a stable id, or a quarantined file with its reason.

Both are rows of the ingestion tables (their fields are the tables' columns) and what
everything outside the graph reads a corpus as: the `fact-check` command, the evaluations
and the benchmarks parse files into the same rows the `source_documents` asset writes.
"""

from typing import Literal

from pydantic import Field

from resources.documents.batches import DocumentRow
from resources.guardrails.prompt_injection import FlaggedSpan

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


class SourceDocument(DocumentRow):
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


class QuarantinedDocument(DocumentRow):
    path: str
    kind: QuarantineKind
    reason: str
    n_bytes: int
    content_sha256: str
