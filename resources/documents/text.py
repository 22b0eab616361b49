"""Plain-text helpers shared by chunking, extraction and verification.

Sentences are the unit of evidence throughout: signals cite a sentence, drafts are
written one claim per evidence sentence, and claims are verified sentence by sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z0-9]+")
NEGATIONS = frozenset({"not", "no", "never", "none", "neither", "nor", "without", "denied", "cancelled", "canceled"})


@dataclass(frozen=True)
class Span:
    """A sentence with its character offsets in the text it came from."""

    text: str
    start: int
    end: int


def split_sentences(text: str) -> list[Span]:
    """Split prose into sentences, keeping offsets so evidence can point into the source."""
    spans: list[Span] = []
    for block in re.finditer(r"[^\n]+(?:\n(?!\s*\n)[^\n]+)*", text):
        start = block.start()
        pieces = _SENTENCE_END.split(block.group())
        cursor = start
        for piece in pieces:
            offset = text.find(piece, cursor)
            stripped = piece.strip()
            if stripped:
                lead = piece.find(stripped)
                spans.append(Span(stripped, offset + lead, offset + lead + len(stripped)))
            cursor = offset + len(piece)
    return spans


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def numbers_in(text: str) -> set[str]:
    """Numbers as written, without thousands separators: "1,200" and "1200" compare equal."""
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def words_in(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def has_negation(text: str) -> bool:
    lowered = text.lower().replace("n't", " not")
    return bool(NEGATIONS & set(_WORD.findall(lowered)))
