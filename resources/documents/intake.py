"""Intake: the files of documents partitions parsed, one text never registered twice.

Partition keys name files, not contents, so two keys can hold the same bytes. The earlier
registered partition keeps the document; a later one is quarantined as its duplicate, so
one text never yields two sets of chunk ids.
"""

from pathlib import Path
from typing import Sequence

from resources.documents.files import UnsafeFile, check_entry, locate, sha256_of
from resources.documents.parsing import parse_document
from resources.documents.records import QuarantinedDocument, SourceDocument
from resources.pipeline_config import PipelineConfig


def ingest_documents(
    pipeline: PipelineConfig, keys: Sequence[str], registered: Sequence[str]
) -> tuple[list[SourceDocument], list[QuarantinedDocument]]:
    """Parse the files of `keys`. A file whose content an earlier registered partition
    holds is quarantined as a duplicate, so one text never yields two sets of chunk ids."""
    earlier = _EarlierCopies(pipeline, registered)
    documents: list[SourceDocument] = []
    quarantined: list[QuarantinedDocument] = []
    for key in keys:
        try:
            root, path = locate(pipeline, key)
        except ValueError as exc:
            quarantined.append(
                QuarantinedDocument(
                    document=key, path=key, kind="unsafe_path", reason=str(exc), n_bytes=0, content_sha256=""
                )
            )
            continue
        parsed = parse_document(
            path, pipeline.max_document_bytes, key, root=root, max_chars=pipeline.max_document_chars
        )
        if isinstance(parsed, SourceDocument) and (original := earlier.find(key, root, path)):
            parsed = QuarantinedDocument(
                document=key,
                path=str(path),
                kind="duplicate",
                reason=f"same content as {original}",
                n_bytes=earlier.size(root, path),
                content_sha256=earlier.hash(root, path),
            )
        (quarantined if isinstance(parsed, QuarantinedDocument) else documents).append(parsed)
    return documents, quarantined


class _EarlierCopies:
    """Finds a registered partition, earlier in partition order, with the same bytes.

    Only regular files inside their folders and of equal size are hashed, each once, so a
    run over one document in a corpus of thousands reads one file's worth of candidates,
    not the corpus, a run over all of them costs one lookup per file (not a scan of the
    earlier ones), and nothing opens a FIFO or follows a link out of a folder.
    """

    def __init__(self, pipeline: PipelineConfig, registered: Sequence[str]):
        self.order = {key: i for i, key in enumerate(registered)}
        # size -> registered files of that size, in partition order: a lookup, not a scan
        self.by_size: dict[int, list[tuple[str, Path, Path]]] = {}
        for key in registered:
            try:
                root, path = locate(pipeline, key)
                self.by_size.setdefault(check_entry(root, path).st_size, []).append((key, root, path))
            except (ValueError, UnsafeFile):
                continue
        self.hashes: dict[Path, str] = {}
        self.first: dict[int, dict[str, str]] = {}

    def hash(self, root: Path, path: Path) -> str:
        if path not in self.hashes:
            try:
                self.hashes[path] = sha256_of(root, path)
            except UnsafeFile as unsafe:
                self.hashes[path] = unsafe.marker
        return self.hashes[path]

    def size(self, root: Path, path: Path) -> int:
        try:
            return check_entry(root, path).st_size
        except UnsafeFile:
            return 0

    def find(self, key: str, root: Path, path: Path) -> str | None:
        position = self.order.get(key, len(self.order))
        first = self._first_by_hash(self.size(root, path)).get(self.hash(root, path))
        return first if first is not None and self.order[first] < position else None

    def _first_by_hash(self, size: int) -> dict[str, str]:
        """The earliest registered file per content hash among files of `size` (hashed once)."""
        if size not in self.first:
            first: dict[str, str] = {}
            for other, other_root, other_path in self.by_size.get(size, []):
                first.setdefault(self.hash(other_root, other_path), other)
            self.first[size] = first
        return self.first[size]
