"""Sentence vectors remembered on disk, so that only the first fit over the labelled sets embeds.

`<data dir>/cache/embeddings-<model hash>.npz`, one file per vector space, never committed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import PrivateAttr

from resources import EmbeddingsResource


def default_cache_path(model_id: str, data_dir: Path | None = None) -> Path:
    """`<data_dir>/cache/embeddings-<model hash>.npz`: one file per vector space, never committed."""
    base = data_dir if data_dir is not None else Path(os.environ.get("AI_PIPELINES_DATA_DIR", "data"))
    return base / "cache" / f"embeddings-{hashlib.sha256(model_id.encode()).hexdigest()[:12]}.npz"


class CachedEmbeddings(EmbeddingsResource):
    """The same embeddings, remembered on disk between fits (`calibrate`, the evaluation).

    Embedding the labelled sets' article sentences takes minutes on two cores, and a vector depends
    only on (model, query or passage mode, text), so vectors are stored in one .npz per model,
    keyed by a hash of mode and text. A cached vector is the one the model returned, so results
    are identical with or without the cache; `--no-cache` skips it, deleting the file resets it.
    """

    cache_path: str = ""
    _vectors: dict[str, np.ndarray] = PrivateAttr(default_factory=dict)
    _loaded: bool = PrivateAttr(default=False)
    _dirty: bool = PrivateAttr(default=False)

    @staticmethod
    def key(text: str, is_query: bool) -> str:
        return hashlib.sha256(f"{'query' if is_query else 'passage'}\0{text}".encode()).hexdigest()[:24]

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = Path(self.cache_path)
        if self.cache_path and path.exists():
            with np.load(path) as stored:
                self._vectors = dict(zip(stored["keys"].tolist(), stored["vectors"]))

    def _embed(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return super()._embed(texts, is_query)
        self._load()
        keys = [self.key(t, is_query) for t in texts]
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in self._vectors))
        if missing:
            for text, vector in zip(missing, super()._embed(missing, is_query)):
                self._vectors[self.key(text, is_query)] = vector
            self._dirty = True
        return np.stack([self._vectors[k] for k in keys])

    def save(self) -> None:
        """Write new vectors (atomically: a half-written cache would be worse than none)."""
        if not (self.cache_path and self._dirty):
            return
        path = Path(self.cache_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._vectors)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, keys=np.array(keys), vectors=np.stack([self._vectors[k] for k in keys]).astype(np.float32))
        partial.replace(path)
        self._dirty = False


def cached(embeddings: EmbeddingsResource, path: Path | None) -> EmbeddingsResource:
    """`embeddings` with a disk cache at `path` (None: no cache)."""
    if path is None or isinstance(embeddings, CachedEmbeddings):
        return embeddings
    return CachedEmbeddings(**embeddings.model_dump(), cache_path=str(path))
