"""Stand-ins: a published field derived, word for word, from the verified text it is written from.

A small model can fail a field's rules on every re-ask (a headline that copies the prompt's
instructions, a meta description naming a fact its summary lacks). The row then has nothing
to publish, and a blocking check stops everything downstream of it for want of one line of
text. The summary it headlines was itself verified, so its own words can stand in: its lead
sentence cut to the field's length, the names it states. Like the drafts' extractive claims,
a stand-in is marked as such and held to the same rules as a model's answer; it is chosen
from a small set of named derivations so that what it can produce is known in advance.

Pure functions on strings; the step that publishes the field decides when one stands in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from resources.documents.text import split_sentences
from resources.verification.claim_names import names_in

# Words a cut text must not end on: they announce something the cut left out ("... in a").
_DANGLING = frozenset(
    "a an the of in on at to for and or but nor by with from as into than that which who its their his her".split()
)
_TRAILING = " ,;:-–—(\"'“‘"


@dataclass(frozen=True)
class Limits:
    """What the answer's schema allows a field: characters per text, and items per list."""

    max_chars: int | None = None
    min_items: int = 0
    max_items: int | None = None


def cut_at_word(text: str, max_chars: int | None) -> str:
    """The text, or its longest opening that ends at a word boundary within `max_chars`,
    without a trailing function word or punctuation left hanging by the cut."""
    text = " ".join(text.split())
    if max_chars is None or len(text) <= max_chars:
        return text
    kept = text[: max_chars + 1].rsplit(" ", 1)[0] if " " in text[: max_chars + 1] else ""
    words = kept.rstrip(_TRAILING).split(" ")
    while len(words) > 1 and words[-1].lower() in _DANGLING:
        words.pop()
    return " ".join(words).rstrip(_TRAILING)


def lead_sentence(source: str, limits: Limits, fallback: str = "") -> str:
    """The source's first sentence, cut at a word boundary to the field's length (a headline)."""
    sentences = split_sentences(source)
    return cut_at_word(sentences[0].text if sentences else source, limits.max_chars)


def lead_sentences(source: str, limits: Limits, fallback: str = "") -> str:
    """As many of the source's leading sentences as fit whole in the field's length, else the
    first one cut at a word boundary (a meta description)."""
    sentences = [s.text for s in split_sentences(source)]
    kept: list[str] = []
    for sentence in sentences:
        if limits.max_chars is not None and len(" ".join([*kept, sentence])) > limits.max_chars:
            break
        kept.append(sentence)
    return " ".join(kept) if kept else lead_sentence(source, limits)


def stated_names(source: str, limits: Limits, fallback: str = "") -> list[str]:
    """The names the source states, in order of first mention, each within the item length,
    at most `max_items`; topped up with `fallback` (the item's key) to reach `min_items`."""
    names: list[str] = []
    for name in names_in(source):
        if (limits.max_chars is None or len(name.text) <= limits.max_chars) and name.text.lower() not in {
            n.lower() for n in names
        }:
            names.append(name.text)
    names = names[: limits.max_items]
    topped = cut_at_word(fallback, limits.max_chars)
    if len(names) < limits.min_items and topped and topped.lower() not in {n.lower() for n in names}:
        names.append(topped)
    return names


Derivation = Callable[[str, Limits, str], "str | list[str]"]
# Each derivation by the name a step's YAML gives it, and the kind of field it fills.
DERIVATIONS: dict[str, tuple[Derivation, str]] = {
    "lead_sentence": (lead_sentence, "string"),
    "lead_sentences": (lead_sentences, "string"),
    "stated_names": (stated_names, "array"),
}
