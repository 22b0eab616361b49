"""Retrieval: the chunks, embedded into a Chroma collection.

The index's data version is a hash of its chunk ids and its embedding model: the
same chunks embedded the same way are the same index, so downstream assets can say
exactly which index they used, and an unchanged corpus re-embeds nothing.
"""

import hashlib
from typing import Collection

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    DataVersion,
    MetadataValue,
    Output,
    asset,
    asset_check,
)
from pydantic import BaseModel

from assets.components.automation import when_documents_change
from assets.components.partitions import DOCUMENTS
from assets.digest.ingestion import Chunk
from resources import VectorStoreResource
from resources.pipeline_config import PipelineConfig
from resources.tables import OWNERS, from_frame

GROUP = "retrieval"
CODE_VERSION = "1"


class IndexManifest(BaseModel):
    """What downstream assets need to know about the index they query."""

    collection: str
    location: str
    embedding_model: str
    version: str
    chunks: int
    added: int
    removed: int


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


@asset(
    group_name=GROUP,
    code_version=CODE_VERSION,
    kinds={"chroma"},
    owners=OWNERS,
    automation_condition=when_documents_change(),
)
def retrieval_index(
    context: AssetExecutionContext,
    pipeline: PipelineConfig,
    vector_store: VectorStoreResource,
    chunks: pd.DataFrame,
) -> Output[IndexManifest]:
    """Chroma collection of every document's chunks, embedded in passage mode; versioned by chunk ids and model.

    Reads the chunks of every registered document partition: a removed document's
    partition is gone, so its chunks leave the collection here.
    """
    rows = from_frame(chunks, Chunk)
    model_id = vector_store.embeddings.model_id
    name = collection_name(pipeline.index_collection, model_id)
    registered = set(context.instance.get_dynamic_partitions(DOCUMENTS.name))
    added, removed = sync_index(vector_store, name, rows, registered)
    manifest = IndexManifest(
        collection=name,
        location=vector_store.location(),
        embedding_model=model_id,
        version=index_version([c.chunk_id for c in rows], model_id),
        chunks=len(rows),
        added=added,
        removed=removed,
    )
    context.log.info(f"Index {name}: {added} chunks embedded, {removed} removed, {len(rows)} in all")
    return Output(
        manifest,
        data_version=DataVersion(manifest.version),
        metadata={
            "location": MetadataValue.path(f"{manifest.location} (collection {name})"),
            "index_version": manifest.version,
            "embedding_model": model_id,
            "chunks": len(rows),
            "embedded_this_run": added,
            "removed_this_run": removed,
        },
    )


@asset_check(
    asset=retrieval_index,
    blocking=True,
    additional_ins={"chunks": AssetIn("chunks")},
    description="The collection holds exactly the current chunk ids: nothing missing, nothing stale.",
)
def index_matches_chunks(
    vector_store: VectorStoreResource, retrieval_index: IndexManifest, chunks: pd.DataFrame
) -> AssetCheckResult:
    stored = vector_store.ids(retrieval_index.collection)
    expected = set(chunks["chunk_id"])
    missing, stale = sorted(expected - stored), sorted(stored - expected)
    return AssetCheckResult(
        passed=not missing and not stale,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "stored": len(stored),
            "expected": len(expected),
            "missing": MetadataValue.json(missing[:20]),
            "stale": MetadataValue.json(stale[:20]),
        },
    )
