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
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import chromadb
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.config import Settings as ChromaSettings
from dagster import ConfigurableResource
from pydantic import BaseModel, Field, PrivateAttr

from resources.embeddings import EmbeddingsResource


class Hit(BaseModel):
    """A stored passage, with its distance when it came from a query."""

    id: str
    text: str
    metadata: dict[str, Any] = {}
    distance: float | None = None


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
    ) -> list[list[Hit]]:
        """Nearest passages per query text; `contains` keeps passages holding that string."""
        if not texts:
            return []
        collection = self.collection(name)
        n_results = min(n_results, max(1, collection.count()))
        found = collection.query(
            query_texts=list(texts),
            n_results=n_results,
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
