"""Stated facts: the numbers, dates and names a short text states, and which its evidence lacks.

A headline or a meta description is published beside the summary it headlines, so it may
say nothing the summary does not: a figure, a year or a name the summary never mentions is
invented, however fluent, and no judge's opinion changes that. The facts are found with
the verifier's own extraction (resources.verification.claim_features), so that a headline is held to
the same reading of "a number", "a date" and "a name" as every published sentence.
"""

from __future__ import annotations

from resources.documents.text import numbers_in, words_in
from resources.verification.claim_features import claim_entities, dates_in

STEM = 5  # letters two word forms share to count as one word ("launches", "launched")


def _mentioned(word: str, evidence_words: set[str]) -> bool:
    """Whether the evidence has the word, or another form of it (title-case headlines
    capitalize verbs and nouns that the evidence writes in lower case)."""
    if word in evidence_words:
        return True
    return len(word) > STEM and any(w[:STEM] == word[:STEM] and len(w) > STEM for w in evidence_words)


def unsupported_facts(text: str, evidence: str) -> list[str]:
    """The facts of `text` that `evidence` does not state, each as "<kind> <value>"; empty when all are supported."""
    evidence_words = words_in(evidence)
    dates = dates_in(text)
    missing = [f"date {d}" for d in sorted(dates - dates_in(evidence))]
    missing += [f"number {n}" for n in sorted(numbers_in(text) - numbers_in(evidence) - dates)]
    names = {n.removesuffix("'s").strip("'") for n in claim_entities(text, evidence)}  # "Grid's" names Grid
    missing += [f"name {n}" for n in sorted(names) if n and not _mentioned(n, evidence_words)]
    return missing
