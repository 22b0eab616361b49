"""Prompt templates live in files beside the assets; their content hash is their version.

An asset's code version includes the versions of its prompts, so editing a prompt
marks exactly the assets that use it (and what depends on them) as changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    template: str

    @property
    def version(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:12]

    def render(self, **values: object) -> str:
        return self.template.format(**values)


def load_prompt(name: str) -> Prompt:
    return Prompt(name=name, template=(PROMPT_DIR / f"{name}.txt").read_text(encoding="utf-8"))
