"""Retrieval: the chunks, embedded into a Chroma collection.

The index's data version is a hash of its chunk ids and its embedding model: the
same chunks embedded the same way are the same index, so downstream assets can say
exactly which index they used, and an unchanged corpus re-embeds nothing. Syncing a
collection with chunks is the resources layer's (resources/retrieval/index_sync.py), shared with
everything that indexes a corpus outside the graph.
"""

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

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.automation import when_documents_change
from assets.components.partitions import DOCUMENTS
from resources import VectorStoreResource
from resources.documents.chunking import Chunk
from resources.pipeline_config import PipelineConfig
from resources.retrieval.index_sync import collection_name, index_version, sync_index
from resources.tables import from_frame

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


@asset(
    **PipelineAssetSpec(
        group=GROUP, code_version=CODE_VERSION, kinds={"chroma"}, automation_condition=when_documents_change()
    ).asset_keywords()
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
