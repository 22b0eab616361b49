"""Documents as a dynamic partition set: one partition per file in a watched folder.

A partition key names a file, not its content (`corpus/acme-q3.md`, `inbox/memo.txt`),
so an edited file is the same partition with new content, and the UI lists documents
by the names people gave them. Content hashes decide what needs processing: the
inbox sensor compares them with what it saw last, and ingestion turns a file whose
content an earlier partition already holds into a duplicate quarantine record.

Anything in a watched folder is discovered, but only regular files inside the folder
are ever opened: a link that resolves elsewhere (to /etc/passwd, say), a FIFO, a
socket, a device or a directory is a partition whose ingestion quarantines it with the
reason. Every read goes through `open_regular_file`, which cannot block and cannot
leave the folder, so neither discovery, the sensor, duplicate detection nor ingestion
can be made to hang or to read outside the folders.
"""

import hashlib
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from pydantic import BaseModel

from resources.pipeline_config import PipelineConfig

# Every asset partitioned by document also declares `backfill_policy=BackfillPolicy.single_run()`:
# a backfill of many documents is one run (one process, one model server) whose assets fan out
# over the run's partitions, not one process per document.
# The column of every per-document table that holds the partition key.
PARTITION_COLUMN = "document"
# Dagster refuses these in partition keys.
_INVALID_IN_KEYS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
_BLOCK = 1 << 20


class FileState(BaseModel):
    """What a file looked like when last seen: its hash, and the stat fields that let
    an unchanged file skip re-hashing. Entries that are never read (see `UnsafeFile`)
    carry a marker such as "special:fifo" instead of a hash."""

    sha256: str
    size: int
    mtime_ns: int


class UnsafeFile(Exception):
    """A watched-folder entry that must not be read, with the quarantine kind and reason."""

    def __init__(self, kind: str, reason: str, marker: str):
        super().__init__(reason)
        self.kind, self.reason, self.marker = kind, reason, marker


_SPECIAL = (
    (stat.S_ISFIFO, "FIFO (named pipe)", "fifo"),
    (stat.S_ISSOCK, "socket", "socket"),
    (stat.S_ISCHR, "character device", "char-device"),
    (stat.S_ISBLK, "block device", "block-device"),
    (stat.S_ISDIR, "directory", "directory"),
)


def _not_regular(mode: int) -> UnsafeFile:
    for test, name, marker in _SPECIAL:
        if test(mode):
            return UnsafeFile("not_regular_file", f"{name}; only regular files are read", f"special:{marker}")
    return UnsafeFile("not_regular_file", f"not a regular file (mode {oct(mode)})", "special:other")


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def check_entry(root: Path, path: Path) -> os.stat_result:
    """The stat of the regular file `path` resolves to inside `root`, or `UnsafeFile`.

    Never opens anything: stat on a FIFO or a socket does not block.
    """
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if not _inside(real, real_root):
        what = "symlink" if os.path.islink(path) else "path"
        raise UnsafeFile("unsafe_path", f"{what} resolves outside the watched folder to {real}", "special:outside-root")
    try:
        status = os.stat(real)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise UnsafeFile("unreadable", f"broken symlink to {real}", "special:broken-link") from None
        raise UnsafeFile(
            "unreadable", "file no longer exists (removed after it was registered)", "special:missing"
        ) from None
    except OSError as exc:
        raise UnsafeFile("unreadable", f"cannot stat file: {exc.strerror or exc}", "special:unreadable") from None
    if not stat.S_ISREG(status.st_mode):
        raise _not_regular(status.st_mode)
    return status


@contextmanager
def open_regular_file(root: Path, path: Path) -> Iterator[tuple[int, os.stat_result]]:
    """A read-only descriptor on the regular file `path` resolves to inside `root`.

    The real path is checked against the real root, opened without following a final
    link and without blocking, and checked again on the descriptor itself, so a file
    swapped for a FIFO or a link between the check and the open is refused too.
    """
    check_entry(root, path)
    real = os.path.realpath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise UnsafeFile(
            "unreadable", "file no longer exists (removed after it was registered)", "special:missing"
        ) from None
    except OSError as exc:
        raise UnsafeFile("unreadable", f"cannot open file: {exc.strerror or exc}", "special:unreadable") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise _not_regular(status.st_mode)
        opened = f"/proc/self/fd/{fd}"
        if os.path.exists(opened) and not _inside(os.readlink(opened), os.path.realpath(root)):
            raise UnsafeFile(
                "unsafe_path", "file moved outside the watched folder while opening", "special:outside-root"
            )
        yield fd, status
    finally:
        os.close(fd)


def read_regular_file(root: Path, path: Path, max_bytes: int) -> tuple[bytes, int]:
    """At most `max_bytes + 1` bytes of the file (enough to tell it is too large), and its size."""
    chunks: list[bytes] = []
    wanted = max_bytes + 1
    with open_regular_file(root, path) as (fd, status):
        while wanted > 0:
            block = os.read(fd, min(wanted, _BLOCK))
            if not block:
                break
            chunks.append(block)
            wanted -= len(block)
    return b"".join(chunks), status.st_size


def watched_folders(pipeline: PipelineConfig) -> dict[str, Path]:
    return {"corpus": Path(pipeline.corpus_dir), "inbox": pipeline.inbox_path()}


def document_key(label: str, root: Path, path: Path) -> str:
    return f"{label}/{path.relative_to(root).as_posix()}"


def is_valid_key(key: str) -> bool:
    return not any(bad in key for bad in _INVALID_IN_KEYS)


def locate(pipeline: PipelineConfig, key: str) -> tuple[Path, Path]:
    """The watched folder of a partition key and the path it names, which stays lexically inside it."""
    return locate_in(watched_folders(pipeline), key)


def locate_in(folders: Mapping[str, Path], key: str, noun: str = "document") -> tuple[Path, Path]:
    """`locate` over any labelled folders (the ticket intake has its own); `noun` names the key in errors."""
    label, _, relative = key.partition("/")
    if label not in folders or not relative:
        raise ValueError(f"{noun} key {key!r} is not <{'|'.join(folders)}>/<path>")
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{noun} key {key!r} does not name a path inside its watched folder")
    return folders[label], folders[label].joinpath(*parts)


def path_for(pipeline: PipelineConfig, key: str) -> Path:
    return locate(pipeline, key)[1]


def sha256_of(root: Path, path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular_file(root, path) as (fd, _):
        for block in iter(lambda: os.read(fd, _BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def discover_entries(root: Path) -> list[Path]:
    """Every non-hidden entry under `root` that is not a real directory: files, links (to
    files or folders, never followed), FIFOs, sockets, devices. Sorted."""
    entries: list[Path] = []
    if not root.is_dir():
        return entries
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(directory)
        linked = [d for d in dirnames if os.path.islink(here / d)]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in linked)
        entries.extend(here / name for name in [*filenames, *linked] if not name.startswith("."))
    return sorted(entries)


def discover_files(directories: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(watched folder, entry) for every entry of `discover_entries` under each folder."""
    return [(directory, path) for directory in directories for path in discover_entries(directory)]


def entry_state(root: Path, path: Path, previous: FileState | None = None) -> FileState:
    """The FileState of one entry; entries that must not be read get a marker, not a hash."""
    try:
        status = check_entry(root, path)
    except UnsafeFile as unsafe:
        if unsafe.marker == "special:missing":
            raise FileNotFoundError(path) from None
        return FileState(sha256=unsafe.marker, size=0, mtime_ns=os.lstat(path).st_mtime_ns)
    if previous and (previous.size, previous.mtime_ns) == (status.st_size, status.st_mtime_ns):
        return previous
    try:
        return FileState(sha256=sha256_of(root, path), size=status.st_size, mtime_ns=status.st_mtime_ns)
    except UnsafeFile as unsafe:
        if unsafe.marker == "special:missing":
            raise FileNotFoundError(path) from None
        return FileState(sha256=unsafe.marker, size=0, mtime_ns=status.st_mtime_ns)


def scan(pipeline: PipelineConfig, known: Mapping[str, FileState] | None = None) -> dict[str, FileState]:
    """Every entry in the watched folders by partition key. Files whose size and mtime
    match `known` keep their recorded hash instead of being read again."""
    return scan_folders(watched_folders(pipeline), known)


def scan_folders(folders: Mapping[str, Path], known: Mapping[str, FileState] | None = None) -> dict[str, FileState]:
    """`scan` over any labelled folders: keys are `<label>/<path inside the folder>`."""
    known = known or {}
    found: dict[str, FileState] = {}
    for label, root in folders.items():
        for path in discover_entries(root):
            key = document_key(label, root, path)
            try:
                found[key] = entry_state(root, path, known.get(key))
            except OSError:  # vanished between listing and reading: next scan decides
                continue
    return found
