"""Prompt templates live in files beside the assets; their content hash is their version.

An asset's code version includes the versions of its prompts, so editing a prompt
marks exactly the assets that use it (and what depends on them) as changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Prompt:
    name: str
    template: str

    @property
    def version(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:12]

    def render(self, **values: object) -> str:
        return self.template.format(**values)


def load_prompt(folder: Path, name: str) -> Prompt:
    """The prompt `name` from the `prompts/` folder of the package that owns it."""
    return Prompt(name=name, template=(folder / "prompts" / f"{name}.txt").read_text(encoding="utf-8"))
