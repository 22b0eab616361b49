"""Document batches: the unit Dagster orchestrates, while the document stays the unit of lineage.

A partition per document costs Dagster a planned and a materialization event per asset
and per document, plus validation and metadata for each: at tens of thousands of
documents that bookkeeping, not the model, is what a run waits on. So the per-document
assets are partitioned by batch, a fixed set of `BATCH_COUNT` buckets, and a document's
batch is a hash of its key:

- membership needs no registry and never moves: a document stays in its batch while it
  exists, whatever arrives or leaves around it, so an edit re-runs one batch;
- the batches fill evenly whatever the folder layout or arrival order, so a bulk load is
  `BATCH_COUNT` partitions whatever its size, and a new or edited document re-runs one
  batch, whose other documents are answered by the response cache (no model call);
- every per-document row names both its `document` and its `batch`, so a person finds a
  document by its key in the tables, in the batch's metadata and with
  `ai-pipelines document <key>`.

Changing `BATCH_COUNT` moves documents between batches; the run planner then sees every
batch as changed and re-materializes them all (from the cache).
"""

import hashlib

from pydantic import BaseModel, Field, model_validator

BATCH_COUNT = 64
BATCH_KEYS: tuple[str, ...] = tuple(f"batch-{i:02d}" for i in range(BATCH_COUNT))


def batch_of(document: str) -> str:
    """The batch a document key belongs to (stable across runs, processes and machines)."""
    digest = hashlib.sha256(document.encode()).digest()
    return BATCH_KEYS[int.from_bytes(digest[:8], "big") % BATCH_COUNT]


def batches_of(documents: list[str] | set[str]) -> list[str]:
    """The batches holding `documents`, in partition order."""
    wanted = {batch_of(d) for d in documents}
    return [b for b in BATCH_KEYS if b in wanted]


def in_batches(documents: list[str], batches: list[str] | set[str]) -> list[str]:
    """The documents of `documents` that belong to `batches`, in their given order."""
    wanted = set(batches)
    return [d for d in documents if batch_of(d) in wanted]


class DocumentRow(BaseModel):
    """The two keys of every per-document row: the document (lineage) and its batch (the
    Dagster partition whose materialization wrote the row)."""

    document: str = Field(default="", description="The document: the file's key in its watched folder.")
    batch: str = Field(default="", description="The document_batches partition holding the document (see batch_of).")

    @model_validator(mode="after")
    def _batch_from_document(self) -> "DocumentRow":
        if self.document and not self.batch:
            self.batch = batch_of(self.document)
        return self
