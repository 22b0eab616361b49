"""Chunking: a document's evidence sentences grouped into the passages the index stores.

A chunk is whole sentences, so evidence never straddles a cut, and its id is the document's
content hash and its position, so an unchanged document keeps its chunk ids wherever it is
chunked (the `chunks` asset, the `fact-check` command, the evaluations). Text flagged as
instructions to a model is never evidence: it ends the chunk before it and is left out.
"""

from pydantic import Field

from resources.documents.batches import DocumentRow
from resources.documents.records import SourceDocument
from resources.documents.text import Span, split_sentences
from resources.guardrails.prompt_injection import unflagged

MAX_CHUNK_CHARS = 1_500


class Chunk(DocumentRow):
    chunk_id: str = Field(description="<doc_id>-<position>: stable while the document is unchanged.")
    doc_id: str
    position: int
    text: str
    char_start: int
    char_end: int


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
