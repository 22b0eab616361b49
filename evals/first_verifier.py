"""Verifier v1, as it was before v2: a comparison column of the fact-check evaluation (`--v1`).

v1 decided by hand-set thresholds from its bundled calibration: the most similar source sentence
that does not conflict with the claim (claim and sentence both embedded in query mode) supports it
at a cosine of 0.92 or more. Nothing ships it any more; it is kept so that its figures stay
reproducible beside the verifier that replaced it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from resources import EmbeddingsResource
from resources.documents.text import has_negation, numbers_in, words_in
from resources.verification.claim_features import Passage, candidates_of, sentences_to_embed
from resources.verification.fitting.labelled_sets import Record

_V1_STOPWORDS = frozenset(
    "the a an of in on at to for and or by with from as is was were are be been its it that this "
    "has have had than which who will would per".split()
)
V1_SUPPORT, V1_REFUTE = 0.92, 0.93


def _v1_words(text: str) -> set[str]:
    return {w for w in words_in(text) if w not in _V1_STOPWORDS and not w.isdigit()}


def _v1_conflict(claim: str, sentence: str) -> bool:
    claim_words = _v1_words(claim)
    if not claim_words or len(claim_words & _v1_words(sentence)) / len(claim_words) < 0.4:
        return False
    claim_numbers, sentence_numbers = numbers_in(claim), numbers_in(sentence)
    if claim_numbers and sentence_numbers and not claim_numbers <= sentence_numbers:
        return True
    return has_negation(claim) != has_negation(sentence)


def legacy_supported(claim: str, claim_vector: np.ndarray, sentences: Sequence[str], query_vectors: np.ndarray) -> bool:
    """v1's decision: the best non-conflicting sentence (both in query mode) at or above 0.92."""
    if len(_v1_words(claim)) < 3 or not sentences:
        return False
    support = refute = 0.0
    for sentence, similarity in zip(sentences, (query_vectors @ claim_vector).tolist()):
        if _v1_conflict(claim, sentence):
            refute = max(refute, similarity)
        elif similarity > support and numbers_in(claim) <= numbers_in(sentence):
            support = similarity
    return support >= V1_SUPPORT and support >= refute


def first_verifier_decisions(records: Sequence[Record], embeddings: EmbeddingsResource) -> list[bool]:
    """v1's decision on each record against its article's sentences (the verifier's single-sentence
    candidates), every article sentence embedded once, in query mode, for all its claims."""
    articles = {r.article_id: r.article for r in records}
    candidates = {key: candidates_of([Passage(chunk_id=key, text=text)]) for key, text in articles.items()}
    sentences = list(dict.fromkeys(t for found in candidates.values() for t in sentences_to_embed(found)))
    query_vectors = dict(zip(sentences, embeddings.embed_queries(sentences)))
    claim_vectors = embeddings.embed_queries([r.claim for r in records])
    decisions = []
    for record, vector in zip(records, claim_vectors):
        singles = [c.text for c in candidates[record.article_id] if c.sentences == 1]
        decisions.append(
            legacy_supported(
                record.claim,
                vector,
                singles,
                np.stack([query_vectors[s] for s in singles]) if singles else np.zeros((0, 1)),
            )
        )
    return decisions
