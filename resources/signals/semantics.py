"""Whether an extracted signal means what it says, not only whether it is grounded.

Grounding proves that a cited sentence contains an entity's name or a figure's number; it
cannot tell a city typed as a person, a figure labelled with a word its sentence never uses,
or a recall tagged as good news. These rules can, from the document's own words, with no
model: a person's name that the text uses as a place ("in Rotterdam", "the Seville plant"),
a product ("150 Tern robots") or a company ("revenue of X"); a figure whose label is not made
of its sentence's words or whose value is not in it; a tone that the document's event words
contradict (tagged positive while its only event words are recall, outage, loss).

They flag; they never repair. A flagged item stays visible with its reason, and the reader
of the signals decides what a flagged item may still be used for. The review
(resources/signals/review.py) repairs only what a document's own words settle, with stricter
cues than these flags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from resources.documents.text import normalize, numbers_in

# Words that put the name after them in a place: "factory in Tartu", "plant near Badajoz".
_PLACE_BEFORE = r"(?:in|near|outside|across|throughout|suburb of|port of|city of|region of)"
# Nouns that a place or a company names when it stands before them: "the Seville plant".
_SITE_AFTER = r"(?:plant|factory|site|hub|office|offices|headquarters|suburb|region|area|port|market|campus)"
# Nouns that a product's name stands before: "150 Tern robots", "SolStack modules".
_PRODUCT_AFTER = (
    r"(?:robot|robots|module|modules|battery|batteries|card|cards|platform|app|software|"
    r"pallet|device|devices|model|models|fillets|flakes|line)"
)
# What a company does in a sentence and a person does not: it has revenue, employees, customers.
_COMPANY_AFTER = (
    r"(?:reported revenue|posted|employs|employed|had revenue|shares|stock|'s revenue|'s shares|ltd|inc|gmbh|plc)"
)
_COMPANY_BEFORE = r"(?:revenue of|employees of|customers of|shares of|acquire|acquired|subsidiary of)"
_LAUNCH_BEFORE = r"(?:launched|unveiled|unveils|launches|introduced) (?:the |its |a )?"

_STOPWORDS = frozenset(
    "a an the of in on at to for by from with and or per its their his her this that than as is was were be "
    "into over under up down about".split()
)
_STEM = 5  # label words count as the sentence's when they share this many leading letters (employees/employed)


def name_pattern(name: str) -> str:
    """A regex for `name` as whole words, any run of spaces between its parts."""
    return r"\b" + r"\s+".join(re.escape(part) for part in name.split()) + r"\b"


def first_match(patterns: Iterable[str], sentence: str) -> str:
    """The phrase of `sentence` that the first matching of `patterns` (tried in order, case
    ignored) matches, or "": every cue is a few such patterns, and the phrase is the evidence."""
    for pattern in patterns:
        match = re.search(pattern, sentence, flags=re.I)
        if match:
            return match.group(0)
    return ""


def place_cue(name: str, sentence: str) -> str:
    """The phrase of `sentence` that uses `name` as a place ("in Rotterdam"), or ""."""
    if not name.strip():
        return ""
    target = name_pattern(name)
    return first_match(
        (
            rf"(?:\b[\w-]+\s+)?\b{_PLACE_BEFORE}\s+(?:the\s+)?{target}",
            rf"{target}\s+{_SITE_AFTER}\b",
            rf"{target}-based\b",
        ),
        sentence,
    )


def product_cue(name: str, sentence: str) -> str:
    """The phrase of `sentence` that uses `name` as a product ("Tern robots"), or ""."""
    if not name.strip():
        return ""
    target = name_pattern(name)
    return first_match((rf"{target}\s+{_PRODUCT_AFTER}\b", rf"\b{_LAUNCH_BEFORE}{target}"), sentence)


def company_cue(name: str, sentence: str) -> str:
    """The phrase of `sentence` that uses `name` as a company ("revenue of X"), or ""."""
    if not name.strip():
        return ""
    target = name_pattern(name)
    return first_match((rf"{target}\s*{_COMPANY_AFTER}\b", rf"\b{_COMPANY_BEFORE}\s+(?:the\s+)?{target}"), sentence)


CUES = {"place": place_cue, "product": product_cue, "company": company_cue}


@dataclass(frozen=True)
class CorpusUsage:
    """How the documents of one run use names: the kinds other documents' signals gave them,
    and the sentences of every document, where a name's context shows what it is."""

    kinds: dict[str, dict[str, set[str]]]  # normalized name -> kind -> documents that typed it so
    sentences: tuple[str, ...]
    _cues: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)
    _lowered: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lowered", tuple(text.lower() for text in self.sentences))

    @classmethod
    def of(cls, typed: Iterable[tuple[str, str, str]], sentences: Iterable[str]) -> CorpusUsage:
        """From (document, name, kind) triples and the corpus's sentences."""
        kinds: dict[str, dict[str, set[str]]] = {}
        for document, name, kind in typed:
            kinds.setdefault(_key(name), {}).setdefault(kind, set()).add(document)
        return cls(kinds, tuple(sentences))

    def other_kinds(self, name: str, document: str) -> dict[str, set[str]]:
        """Kinds other documents gave `name`, besides person and other."""
        return {
            kind: documents - {document}
            for kind, documents in self.kinds.get(_key(name), {}).items()
            if kind not in ("person", "other") and documents - {document}
        }

    def cue(self, name: str) -> tuple[str, str]:
        """The first (kind, phrase) in which the corpus uses `name` as a place, product or
        company, or ("", ""). Remembered per name: a corpus names the same people often."""
        if name not in self._cues:
            lowered = name.lower()
            found = (
                (kind, phrase)
                for text, lowered_text in zip(self.sentences, self._lowered)
                if lowered in lowered_text
                for kind, rule in CUES.items()
                if (phrase := rule(name, text))
            )
            self._cues[name] = next(found, ("", ""))
        return self._cues[name]


def _key(name: str) -> str:
    return normalize(name)


def person_problem(name: str, sentence: str, usage: CorpusUsage | None = None, document: str = "") -> str:
    """Why `name`, typed person, is not one: the reason, or "" when nothing says otherwise."""
    cue = place_cue(name, sentence)
    if cue:
        return f"typed person, but its own sentence uses it as a place: '{cue}'"
    cue = product_cue(name, sentence) or company_cue(name, sentence)
    if cue:
        return f"typed person, but its own sentence uses it as a product or company: '{cue}'"
    if usage is None:
        return ""
    others = usage.other_kinds(name, document)
    if others:
        kind, documents = sorted(others.items())[0]
        return f"typed person, but typed {kind} in {len(documents)} other document(s), e.g. {sorted(documents)[0]}"
    kind, cue = usage.cue(name)
    return f"typed person, but the corpus uses it as a {kind}: '{cue}'" if cue else ""


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOPWORDS]


def _in_sentence(word: str, sentence_words: set[str]) -> bool:
    if word in sentence_words:
        return True
    return len(word) >= _STEM and any(w[:_STEM] == word[:_STEM] for w in sentence_words if len(w) >= _STEM)


def figure_problem(label: str, value: str, sentence: str) -> str:
    """Why a key figure does not say what its sentence says: the reason, or ""."""
    wanted = numbers_in(value)
    if not wanted or not wanted <= numbers_in(sentence):
        return f"value '{value}' does not occur in its evidence sentence"
    label_words = _content_words(label)
    if not label_words:
        return f"label '{label}' has no words to say what the value measures"
    sentence_words = {w for w in re.findall(r"[a-z]+", sentence.lower())}
    strangers = [w for w in label_words if not _in_sentence(w, sentence_words)]
    if strangers:
        return f"label '{label}' has words its evidence sentence does not use: {', '.join(strangers)}"
    return ""


# Event words: what happened to a company, good or bad. Kept to words that name events, so
# that "fraud-detection startup" or "stepped down" do not count as bad news.
NEGATIVE_EVENTS = frozenset(
    "recall recalls recalled outage outages delay delays delayed loss losses layoff layoffs laid breach breaches "
    "breached fined fines penalty lawsuit lawsuits sued bankruptcy insolvency insolvent shortfall shortfalls "
    "unavailable faults faulty failure failed fell decline declined declines plunged slump incident warned "
    "warning downgrade downgraded strike closure".split()
)
POSITIVE_EVENTS = frozenset(
    "launch launched launches unveiled unveils profit profits profitable growth grew grow grows record award "
    "awarded awards won wins raised raises higher expands expanded expansion opened signed "
    "largest fastest increase increased double doubled".split()
)


@dataclass(frozen=True)
class EventWords:
    positive: tuple[str, ...]
    negative: tuple[str, ...]


def event_words(text: str) -> EventWords:
    """The document's positive and negative event words, each once, in order of appearance."""
    words = list(dict.fromkeys(re.findall(r"[a-z]+", text.lower())))
    return EventWords(
        positive=tuple(w for w in words if w in POSITIVE_EVENTS),
        negative=tuple(w for w in words if w in NEGATIVE_EVENTS),
    )


def tone_contradiction(sentiment: str, text: str) -> str:
    """Why the document's own event words contradict `sentiment`: the reason, or ""."""
    found = event_words(text)
    if sentiment == "positive" and found.negative and not found.positive:
        return f"tagged positive, but its only event words are negative: {', '.join(found.negative[:5])}"
    if sentiment == "negative" and found.positive and not found.negative:
        return f"tagged negative, but its only event words are positive: {', '.join(found.positive[:5])}"
    return ""
