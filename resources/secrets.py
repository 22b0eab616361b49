"""Secrets: configured as Dagster `EnvVar`s, revealed only where a client needs them, and
cut from any text the gateway stores or raises.

Inside a run Dagster resolves an `EnvVar` field to its value; a resource used outside a
run (`ai-pipelines fact-check`) still holds the `EnvVar`, whose `str()` refuses to give
the value, so clients take keys through `reveal`. A provider's 401 message can echo the
key it was given, and such a message would travel into the trace table, the ledger,
logs, exceptions and run reports: everything written about a failure goes through
`redact` first.
"""

from __future__ import annotations

from typing import Iterable

from dagster import EnvVar

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4  # shorter values ("", "x") would shred ordinary text and protect nothing


def reveal(value: str) -> str:
    """The secret's value, whether the field holds it already or still the `EnvVar`."""
    if isinstance(value, EnvVar):
        return value.get_value() or ""
    return value


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced, longest first (a key may contain another)."""
    values = {reveal(s) for s in secrets}
    for secret in sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
