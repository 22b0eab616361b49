"""The vector-store resource: Chroma on local disk by default, a Chroma server when a host is set.

Chroma's default embedding function downloads an ONNX model on first use, which
fails offline and silently mixes vector spaces; every collection here is opened with
our own embedding function instead, so passages and queries are embedded by the
configured embeddings resource in their proper modes.

Chroma on disk is one writer at a time: a process that writes from a stale in-memory
index could persist it over another process's writes. Every index update therefore
runs under `writing()`, an exclusive file lock beside the data that also drops this
process's cached view, so the writer starts from what is on disk and two runs
updating the index at once apply their changes one after the other. A Chroma server
serializes writes itself and needs no lock.

A query ranks by `retrieval_mode` (see `resources.retrieval.hybrid_ranking` for why): the nearest vectors
alone, or those fused with a BM25 ranking of the same collection, then reranked. The BM25 index
is built in this process from the collection's own ids and texts, and is rebuilt whenever they
differ from what it was built from, which every hybrid query checks against Chroma: a passage
upserted or deleted by any process is ranked, or gone, from the next query on.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import chromadb
import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.config import Settings as ChromaSettings
from dagster import ConfigurableResource
from pydantic import BaseModel, Field, PrivateAttr

from resources.embeddings import EmbeddingsResource
from resources.retrieval.hybrid_ranking import Bm25, QueryTerms, reciprocal_rank_fusion, rerank_score

RetrievalMode = Literal["vector", "hybrid", "hybrid_rerank"]
# Candidates each ranking brings to the fusion: enough for a passage that one ranking places far
# down to be lifted by the other, and still one Chroma query and one pass over the BM25 index.
MIN_CANDIDATES = 20
CANDIDATES_PER_RESULT = 3


class Hit(BaseModel):
    """A stored passage, with its distance and ranking score when it came from a query."""

    id: str
    text: str
    metadata: dict[str, Any] = {}
    distance: float | None = Field(default=None, description="Cosine distance of the passage to the query.")
    score: float | None = Field(
        default=None, description="What ranked it: the fused (RRF) or reranked score; None when the distance did."
    )


@dataclass(frozen=True)
class LexicalIndex:
    """BM25 over a collection's passages as they were when `fingerprint` was taken."""

    fingerprint: str
    ids: list[str]
    texts: list[str]
    bm25: Bm25

    @classmethod
    def fingerprint_of(cls, ids: Sequence[str], texts: Sequence[str]) -> str:
        digest = hashlib.sha256()
        for item, text in sorted(zip(ids, texts)):
            digest.update(f"{len(item)}:{item}{len(text)}:{text}".encode())
        return digest.hexdigest()

    def top(self, query: str, n: int, contains: str | None = None) -> list[str]:
        """The ids of the `n` passages BM25 ranks best; `contains` as Chroma applies it (case-sensitive)."""
        allowed = np.array([contains in t for t in self.texts], dtype=bool) if contains else None
        return [self.ids[i] for i in self.bm25.top(query, n, allowed)]


class _LexicalIndexes:
    """The BM25 index of each recently queried collection, shared by every resource in the process."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._indexes: OrderedDict[tuple[str, str], LexicalIndex] = OrderedDict()
        self._lock = threading.Lock()

    def current(self, key: tuple[str, str], ids: Sequence[str], texts: Sequence[str]) -> LexicalIndex:
        """The index of these passages: the cached one when they are what it was built from, else a new one."""
        fingerprint = LexicalIndex.fingerprint_of(ids, texts)
        with self._lock:
            index = self._indexes.get(key)
            if index is None or index.fingerprint != fingerprint:
                index = LexicalIndex(fingerprint, list(ids), list(texts), Bm25(texts))
                self._indexes[key] = index
            self._indexes.move_to_end(key)
            while len(self._indexes) > self.capacity:
                self._indexes.popitem(last=False)
            return index


LEXICAL_INDEXES = _LexicalIndexes()


class _ChromaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Adapts the embeddings resource to Chroma's embedding-function protocol."""

    def __init__(self, embeddings: EmbeddingsResource) -> None:
        self._embeddings = embeddings

    def __call__(self, input: Documents) -> Embeddings:
        return list(self._embeddings.embed_passages(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self._embeddings.embed_queries(list(input)))

    @staticmethod
    def name() -> str:
        return "ai_pipelines"

    def get_config(self) -> dict[str, Any]:
        return {"base_url": self._embeddings.base_url, "model": self._embeddings.model}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "_ChromaEmbeddingFunction":
        # Chroma rebuilds this when it reads a collection back; we always pass our own
        # instance (with credentials) when opening one, so this copy is never used to embed.
        return _ChromaEmbeddingFunction(
            EmbeddingsResource(base_url=config.get("base_url", ""), model=config.get("model", ""))
        )

    def is_legacy(self) -> bool:
        return False


class VectorStoreResource(ConfigurableResource):
    """Chroma collections keyed by name. Set `host` to use a Chroma server instead of `persist_dir`."""

    embeddings: EmbeddingsResource
    persist_dir: str = Field(default="data/chroma", description="Folder of Chroma on disk (when host is empty).")
    host: str = Field(default="", description="Chroma server host; empty = Chroma on disk.")
    port: int = Field(default=8000, ge=1, le=65535, description="Chroma server port.")
    ssl: bool = Field(default=False, description="Reach the Chroma server over HTTPS.")
    retrieval_mode: RetrievalMode = Field(
        default="hybrid_rerank",
        description="How a search ranks passages: vector (nearest embeddings), hybrid (those fused with a BM25 "
        "ranking by reciprocal rank) or hybrid_rerank (the fused candidates ordered by cosine plus the query's "
        "words, numbers and names they hold); `make eval-retrieval` measures the three.",
    )

    _client: Any = PrivateAttr(default=None)

    def location(self) -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{self.host}:{self.port}" if self.host else str(Path(self.persist_dir).resolve())

    def client(self):
        if self._client is None:
            settings = ChromaSettings(anonymized_telemetry=False)
            if self.host:
                self._client = chromadb.HttpClient(host=self.host, port=self.port, ssl=self.ssl, settings=settings)
            else:
                Path(self.persist_dir).mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=self.persist_dir, settings=settings)
        return self._client

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive access for an update: other processes' writers wait (see the module doc)."""
        if self.host:
            yield
            return
        Path(self.persist_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.persist_dir) / ".writer.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self._client is not None:
                    self._client.clear_system_cache()
                    self._client = None
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def collection(self, name: str):
        return self.client().get_or_create_collection(
            name=name,
            embedding_function=_ChromaEmbeddingFunction(self.embeddings),  # type: ignore[arg-type]
            configuration={"hnsw": {"space": "cosine"}},
        )

    def ids(self, name: str) -> set[str]:
        return set(self.collection(name).get(include=[])["ids"])

    def id_metadata(self, name: str) -> dict[str, dict[str, Any]]:
        """Every stored id with its metadata (no documents, no vectors)."""
        found = self.collection(name).get(include=["metadatas"])
        return {i: dict(m or {}) for i, m in zip(found["ids"], found["metadatas"])}

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        documents: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
    ) -> int:
        """Add or replace passages in batches no larger than the server accepts."""
        collection = self.collection(name)
        batch = max(1, self.client().get_max_batch_size())
        for start in range(0, len(ids), batch):
            end = start + batch
            collection.upsert(
                ids=list(ids[start:end]),
                documents=list(documents[start:end]),
                metadatas=list(metadatas[start:end]) or None,
            )
        return len(ids)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        if ids:
            self.collection(name).delete(ids=list(ids))
        return len(ids)

    def get(self, name: str, ids: Sequence[str]) -> list[Hit]:
        if not ids:
            return []
        found = self.collection(name).get(ids=list(ids), include=["documents", "metadatas"])
        return [
            Hit(id=i, text=d or "", metadata=dict(m or {}))
            for i, d, m in zip(found["ids"], found["documents"], found["metadatas"])
        ]

    def query(
        self,
        name: str,
        texts: Sequence[str],
        n_results: int = 5,
        contains: str | None = None,
        mode: RetrievalMode | None = None,
    ) -> list[list[Hit]]:
        """The best passages per query text, ranked by `mode` (unset: `retrieval_mode`);
        `contains` keeps passages holding that string."""
        if not texts:
            return []
        mode = mode or self.retrieval_mode
        collection = self.collection(name)
        count = max(1, collection.count())
        vectors = self.embeddings.embed_queries(list(texts))
        if mode == "vector":
            return self._nearest(collection, vectors, min(n_results, count), contains)
        pool = min(count, max(MIN_CANDIDATES, n_results * CANDIDATES_PER_RESULT))
        index = self.lexical_index(name)
        fused = self._fused(collection, index, texts, vectors, pool, contains)
        if mode == "hybrid_rerank":
            fused = [_reranked(QueryTerms.of(text, index.bm25.idf), hits) for text, hits in zip(texts, fused)]
        return [hits[:n_results] for hits in fused]

    def _fused(
        self,
        collection: Any,
        index: LexicalIndex,
        texts: Sequence[str],
        vectors: np.ndarray,
        pool: int,
        contains: str | None,
    ) -> list[list[Hit]]:
        """Per query, the passages of the `pool` best of either ranking, by the RRF of the two, each with its
        distance. None is cut after fusion: a passage only BM25 found ranks below those both found, and it
        may be the one the rerank lifts."""
        nearest = self._nearest(collection, vectors, pool, contains)
        fused = [
            list(reciprocal_rank_fusion([[h.id for h in near], index.top(text, pool, contains)]).items())
            for text, near in zip(texts, nearest)
        ]
        lexical_only = {i for ranked in fused for i, _ in ranked} - {h.id for near in nearest for h in near}
        stored = self._with_vectors(collection, sorted(lexical_only))
        results = []
        for vector, near, ranked in zip(vectors, nearest, fused):
            known = {h.id: h for h in near}
            hits = []
            for i, score in ranked:
                if i in known:
                    hit = known[i]
                elif i in stored:  # else deleted since the index was read
                    hit = stored[i][0].model_copy(update={"distance": _cosine_distance(vector, stored[i][1])})
                else:
                    continue
                hits.append(hit.model_copy(update={"score": score}))
            results.append(hits)
        return results

    def lexical_index(self, name: str) -> LexicalIndex:
        """The collection's BM25 index, rebuilt when its ids or texts are no longer those it was built from."""
        collection = self.collection(name)
        stored = collection.get(include=["documents"])
        texts = [d or "" for d in stored["documents"]]
        return LEXICAL_INDEXES.current((self.location(), str(collection.id)), stored["ids"], texts)

    def _nearest(self, collection: Any, vectors: np.ndarray, n: int, contains: str | None) -> list[list[Hit]]:
        found = collection.query(
            query_embeddings=list(vectors),
            n_results=n,
            where_document={"$contains": contains} if contains else None,
            include=["documents", "metadatas", "distances"],
        )
        return [
            [
                Hit(id=i, text=d or "", metadata=dict(m or {}), distance=float(dist))
                for i, d, m, dist in zip(ids, docs, metas, dists)
            ]
            for ids, docs, metas, dists in zip(found["ids"], found["documents"], found["metadatas"], found["distances"])
        ]

    def _with_vectors(self, collection: Any, ids: Sequence[str]) -> dict[str, tuple[Hit, np.ndarray]]:
        """Passages with their stored vectors: those found by BM25 alone, whose distance Chroma did not give."""
        if not ids:
            return {}
        found = collection.get(ids=list(ids), include=["documents", "metadatas", "embeddings"])
        return {
            i: (Hit(id=i, text=d or "", metadata=dict(m or {})), np.asarray(e, dtype=np.float32))
            for i, d, m, e in zip(found["ids"], found["documents"], found["metadatas"], found["embeddings"])
        }


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """As Chroma measures it in a cosine space: 1 - cosine similarity."""
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(a @ b) / norms if norms else 1.0


def _reranked(terms: QueryTerms, hits: Sequence[Hit]) -> list[Hit]:
    """The hits by rerank score, best first (ties keep their fused order)."""
    scored = [h.model_copy(update={"score": rerank_score(terms, h.text, 1.0 - (h.distance or 0.0))}) for h in hits]
    return sorted(scored, key=lambda h: -(h.score or 0.0))
