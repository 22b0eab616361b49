"""Documents as a dynamic partition set: one partition per file in a watched folder.

A partition key names a file, not its content (`corpus/acme-q3.md`, `inbox/memo.txt`),
so an edited file is the same partition with new content, and the UI lists documents
by the names people gave them. Content hashes decide what needs processing: the
inbox sensor compares them with what it saw last, and ingestion turns a file whose
content an earlier partition already holds into a duplicate quarantine record.
"""


import hashlib
from pathlib import Path
from typing import Iterable, Mapping

from dagster import BackfillPolicy, DynamicPartitionsDefinition
from pydantic import BaseModel

from assets.config import PipelineConfig

DOCUMENTS = DynamicPartitionsDefinition(name="documents")
# The column of every per-document table that holds the partition key.
PARTITION_COLUMN = "document"
# Dagster refuses these in partition keys.
_INVALID_IN_KEYS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


def per_document() -> dict[str, object]:
    """Arguments of every asset partitioned by document.

    A backfill of many documents is one run (one process, one model server) whose
    assets fan out over the run's partitions, not one process per document.
    """
    return {"partitions_def": DOCUMENTS, "backfill_policy": BackfillPolicy.single_run()}


class FileState(BaseModel):
    """What a file looked like when last seen: its hash, and the stat fields that let
    an unchanged file skip re-hashing."""

    sha256: str
    size: int
    mtime_ns: int


def watched_folders(pipeline: PipelineConfig) -> dict[str, Path]:
    return {"corpus": Path(pipeline.corpus_dir), "inbox": pipeline.inbox_path()}


def document_key(label: str, root: Path, path: Path) -> str:
    return f"{label}/{path.relative_to(root).as_posix()}"


def is_valid_key(key: str) -> bool:
    return not any(bad in key for bad in _INVALID_IN_KEYS)


def path_for(pipeline: PipelineConfig, key: str) -> Path:
    label, _, relative = key.partition("/")
    folders = watched_folders(pipeline)
    if label not in folders or not relative:
        raise ValueError(f"document key {key!r} is not <{'|'.join(folders)}>/<path>")
    return folders[label] / relative


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def discover_files(directories: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for directory in directories:
        if directory.is_dir():
            files.extend(
                p for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith(".")
            )
    return files


def scan(pipeline: PipelineConfig, known: Mapping[str, FileState] | None = None) -> dict[str, FileState]:
    """Every file in the watched folders by partition key. Files whose size and mtime
    match `known` keep their recorded hash instead of being read again."""
    known = known or {}
    found: dict[str, FileState] = {}
    for label, root in watched_folders(pipeline).items():
        for path in discover_files([root]):
            key = document_key(label, root, path)
            try:
                stat = path.stat()
                previous = known.get(key)
                if previous and (previous.size, previous.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                    found[key] = previous
                else:
                    found[key] = FileState(sha256=sha256_of(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            except OSError:  # vanished or unreadable between listing and reading: next scan decides
                continue
    return found
