"""The settings every benchmark run uses: the benchmark's own fake model and embedder on
127.0.0.1, never what a user configured in `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ai_pipelines.settings import Settings


def bench_settings(root: Path, base_url: str, concurrency: int, **paths: Path) -> Settings:
    """Data under `root/data`, both tiers and the embedder on the fake server at `base_url`;
    `paths` adds the corpus, inbox or ticket folders a scenario writes. The code location is
    imported here, not at the top, so that a scenario's start-up time includes it."""
    from ai_pipelines.settings import Settings

    return Settings(
        _env_file=None,
        data_dir=root / "data",
        llm_base_url=base_url,
        llm_fast_model="bench-fast",
        llm_strong_model="bench-strong",
        embeddings_base_url=base_url,
        embeddings_model="hashed-bag-of-words",
        llm_max_concurrency=concurrency,
        **paths,
    )
