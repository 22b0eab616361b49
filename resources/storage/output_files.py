"""Files the pipeline hands to people (digest, report, published digests).

A reader, a browser or a sync job may open one while a run rewrites it, and a run
may die mid-write: each file is written aside and renamed into place, so it is
always the old version or the new one, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_whole(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
