"""Markdown previews for materialization metadata: what a person reads in the UI."""

from __future__ import annotations

from typing import Mapping, Sequence


def _cell(value: object, width: int) -> str:
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def markdown_table(rows: Sequence[Mapping[str, object]], width: int = 120) -> str:
    if not rows:
        return "_(none)_"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(r.get(h, ""), width) for h in headers) + " |" for r in rows]
    return "\n".join(lines)
