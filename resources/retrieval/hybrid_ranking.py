"""Lexical ranking (BM25), fusion by reciprocal rank and a rerank without a model.

An embedding squeezes a passage into one vector, and the token that decides relevance (an
order number, a product code, a version, a name the model never saw) moves it little: asked
"Was O1051 refunded?" among thirty orders, the embedder returns orders that were refunded. BM25
ranks on the exact tokens and returns O1051. The two rankings are fused by rank, not by score
(reciprocal rank fusion, Cormack et al. 2009), because cosine similarity and BM25 live on
unrelated scales that no fixed weight keeps comparable across collections and queries. The
fused candidates are then ordered by a cheap, deterministic score of the query against each of
them: the cosine of the vectors already computed plus the share of the query's content words
(the rarer, the more they count), numbers and names the passage holds, so a passage is judged
on the facts a query names rather than on its rank in two lists. A model-based rerank (the
`strong` tier reading each candidate) would read better still, at a model call per query; it
is left for when a measurement asks for it.

Written here rather than taken from a package: the whole of BM25 is some thirty lines of numpy
over the few thousand passages of a collection; `rank-bm25` has not been released since 2022,
and `bm25s`, fast on millions of documents, would still leave the tokenizer, the `contains`
filter and keeping the index in step with Chroma to us.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from resources.documents.text import numbers_in, words_in
from resources.verification.claim_features import content_words
from resources.verification.claim_names import Name, is_held, names_in

K1 = 1.2
B = 0.75
RRF_K = 60
# How much the overlap share (0 to 1) counts against the cosine: a fifth more of the query held
# is worth 0.05 of cosine, about the spread of e5's cosines over one query's candidates. Of 0.25,
# 0.5 and 1 on the labelled cases (`evals.retrieval`), 0.25 ranked best; at 1 the
# overlap outweighs the meaning and the rerank does worse than no rerank.
OVERLAP_WEIGHT = 0.25

# A number with its separators ("100,000", "2026.11.3"), else a run of letters and digits
# ("o1044", "córdoba"); lower-cased first, so "O1044" and "o1044" are one token.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers; thousands separators dropped, so "1,200" and "1200" match."""
    return [t.replace(",", "") for t in _TOKEN.findall(text.lower())]


class Bm25:
    """Okapi BM25 over a fixed list of passages, with Lucene's idf (never negative)."""

    def __init__(self, texts: Sequence[str], k1: float = K1, b: float = B) -> None:
        counts = [Counter(tokenize(t)) for t in texts]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        self.size = len(counts)
        average = float(lengths.mean()) if self.size and lengths.any() else 1.0
        saturation = k1 * (1 - b + b * lengths / average)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for row, found in enumerate(counts):
            for term, tf in found.items():
                rows, tfs = postings.setdefault(term, ([], []))
                rows.append(row)
                tfs.append(tf)
        # Per term: the passages holding it and its whole contribution to each one's score.
        self._weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.idf: dict[str, float] = {}
        for term, (rows, tfs) in postings.items():
            at, tf = np.array(rows), np.array(tfs, dtype=np.float64)
            self.idf[term] = math.log(1 + (self.size - len(rows) + 0.5) / (len(rows) + 0.5))
            self._weights[term] = (at, self.idf[term] * tf * (k1 + 1) / (tf + saturation[at]))

    def scores(self, query: str) -> np.ndarray:
        """One score per passage; 0 for a passage sharing no token with the query."""
        out = np.zeros(self.size)
        for term, repeats in Counter(tokenize(query)).items():
            if term in self._weights:
                at, weight = self._weights[term]
                out[at] += repeats * weight
        return out

    def top(self, query: str, n: int, allowed: np.ndarray | None = None) -> list[int]:
        """The rows of the `n` best-scoring passages that share a token with the query, best first;
        `allowed` (a boolean mask) keeps only those passages."""
        scores = self.scores(query)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        ranked = np.argsort(-scores, kind="stable")[:n]
        return [int(i) for i in ranked if scores[i] > 0]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """Ids by fused score, best first: the sum over rankings of 1 / (k + rank), ranks from 1.
    Ties keep the order in which the ids first appear (the first ranking's first)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return dict(sorted(fused.items(), key=lambda kv: -kv[1]))


@dataclass(frozen=True)
class QueryTerms:
    """What a passage should hold to answer the query: its content words (each weighted by its idf in
    the collection, so a rare word counts for more than a common one), numbers and names."""

    words: dict[str, float]
    numbers: frozenset[str]
    names: tuple[Name, ...]

    @classmethod
    def of(cls, query: str, idf: dict[str, float]) -> QueryTerms:
        words = {w: idf[w] for w in content_words(query) if w in idf}
        return cls(words, frozenset(numbers_in(query)), tuple(names_in(query)))

    def overlap(self, passage: str) -> float:
        """The mean, over the kinds the query has, of the share of that kind the passage holds."""
        words = words_in(passage)
        shares = []
        if self.words:
            shares.append(sum(v for w, v in self.words.items() if w in words) / sum(self.words.values()))
        if self.numbers:
            shares.append(len(self.numbers & numbers_in(passage)) / len(self.numbers))
        if self.names:
            shares.append(sum(is_held(n, words, set()) for n in self.names) / len(self.names))
        return sum(shares) / len(shares) if shares else 0.0


def rerank_score(terms: QueryTerms, passage: str, cosine: float) -> float:
    return cosine + OVERLAP_WEIGHT * terms.overlap(passage)
