"""A vector-store collection kept equal to a set of chunks, re-embedding nothing it already holds.

Chunk ids are content-derived, so an id the collection holds is the same text: syncing embeds
only the chunks it lacks and drops those no longer wanted. The `retrieval_index` asset keeps the
pipeline's index this way, and the `fact-check` command, the evaluations and the benchmarks index
their own corpora through the same code. A collection is named per embedding model, since vectors
of two models live in different spaces; an index's version is its chunk ids and its model.
"""

import hashlib
from typing import Collection

from resources.documents.chunking import Chunk
from resources.vector_store import VectorStoreResource


def collection_name(base: str, embedding_model: str) -> str:
    """Vectors from different models live in different spaces, hence different collections."""
    return f"{base}-{hashlib.sha256(embedding_model.encode()).hexdigest()[:8]}"


def index_version(chunk_ids: list[str], embedding_model: str) -> str:
    digest = hashlib.sha256(embedding_model.encode())
    for chunk_id in sorted(chunk_ids):
        digest.update(chunk_id.encode())
    return digest.hexdigest()[:16]


def sync_index(
    vector_store: VectorStoreResource, collection: str, rows: list[Chunk], registered: Collection[str] | None = None
) -> tuple[int, int]:
    """Embed only chunks the collection lacks and drop those no longer in the corpus.

    Chunk ids are content-derived, so an id already present holds the same text. With
    `registered` (the documents partitions that exist now), a stored chunk is dropped
    only when its document is one of `rows`' documents or is no longer registered: the
    chunks of a document that another run registered and indexed after these rows
    were read are not this run's to remove. Updates hold the store's writer lock.
    """
    wanted = {c.chunk_id: c for c in rows}
    known = {c.document for c in rows}
    with vector_store.writing():
        existing = vector_store.id_metadata(collection)
        new = [wanted[i] for i in sorted(wanted.keys() - existing.keys())]
        removed = sorted(
            i
            for i, meta in existing.items()
            if i not in wanted
            and (
                registered is None
                or not meta.get("document")
                or meta["document"] in known
                or meta["document"] not in registered
            )
        )
        vector_store.upsert(
            collection,
            ids=[c.chunk_id for c in new],
            documents=[c.text for c in new],
            metadatas=[{"doc_id": c.doc_id, "position": c.position, "document": c.document} for c in new],
        )
        vector_store.delete(collection, removed)
    return len(new), len(removed)
