"""The review of a model's extraction: corrections where the document's own words leave no doubt.

The semantic rules (resources/signals/semantics.py) flag what a small model gets wrong; a
flagged item is kept out of everything downstream, so a model that types every city as a
person would leave the digest with no places. Much of what such a model gets wrong, a reader
settles from the document's own text without judgement: "a factory in Rotterdam" is a place,
"150 Tern robots" a product, "shares of Helios Grid" or "Bluefin Foods AS" a company; a
document whose only event words are recall and recalled is not good news. This review applies
those readings, and only those:

- An entity's kind changes only when every phrase of its own document that gives the name a
  kind (the cues below, stricter than the flagging ones) gives the same kind. When two
  phrases disagree ("the Seville plant" can be a company's plant or a city), or nothing in
  the document says, the model's answer stands, and the flag, if any, stays.
- A tone changes only when the document's own event words contradict it: tagged positive
  while every event word is negative (or the reverse). A document with event words both ways,
  or none, keeps the model's tone: the words cannot say which side weighs more, and a list of
  words is not a reading of an article. Mixed and neutral are never contradicted this way.

Every correction keeps the model's own answer beside it and says why, so a person can audit
the review, and the counts show how much of a run's signals the review rather than the model
decided.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from resources.signals.semantics import event_words, first_match, name_pattern, tone_contradiction

# "in X", "near X", "Port of X": X is a place, unless the "in" is an investment or a share of something.
_PLACE_BEFORE = r"(?:in|near|outside|across|throughout|port of|city of|region of|province of|suburb of)"
_NOT_A_PLACE_BEFORE = frozenset(
    "invest invested invests investing investment investments stake stakes share shares interest interests "
    "role roles position positions confidence trust listed".split()
)
_PLACE_NAME = re.compile(r"^(?:port|city|province|region|county|state|republic|kingdom) of\b", re.I)

# Nouns a product's name stands before ("150 Tern robots"), verbs a product follows.
_PRODUCT_AFTER = (
    r"(?:robot|robots|module|modules|battery|batteries|card|cards|platform|app|apps|software|device|devices|"
    r"vehicle|vehicles|drone|drones|phone|phones|chip|chips|drug|drugs)"
)
_PRODUCT_BEFORE = r"(?:launched|launches|launch|unveiled|unveils|introduced|introduces|released|releases|ships)"
_SITE = r"(?:plant|plants|factory|factories|site|sites|park|parks|project|projects|storage|facility|line)\b"
_PRODUCT_NAME = re.compile(r"\b(?:card|robot|app|platform|phone|drone|chip)$", re.I)

# Legal forms and the words company names are commonly made of; any of them ends the name.
_COMPANY_NAME = re.compile(
    r"\b(?:ltd|limited|inc|incorporated|corp|corporation|co|llc|plc|gmbh|ag|sa|se|nv|bv|ab|as|asa|oy|oyj|spa|srl|"
    r"group|holding|holdings|bank|capital|ventures|partners|robotics|foods|energy|systems|technologies|technology|"
    r"labs|motors|pharma|pharmaceuticals|logistics|industries|airlines|insurance|networks|software|solutions|"
    r"telecom|media|electric|steel|mining|airways|retail|markets)\.?$",
    re.I,
)
# What a company has and a person does not, in the phrase around its name.
_COMPANY_BEFORE = (
    r"(?:shares (?:of|in)|stake in|acquired|acquire|acquisition of|takeover of|subsidiary of|revenue of|"
    r"customers of|employees of|chief executive of|ceo of|founder of|founders of|chair of|board of)"
)
_COMPANY_AFTER = (
    r"(?:['’]s? (?:revenue|revenues|sales|shares|profit|profits|net loss|customers|employees|staff|workforce|"
    r"chief executive|ceo|board|subsidiary|headquarters)|(?:\s+(?:reported|posted|recorded)\b[^.]{0,40}?"
    r"\b(?:revenue|revenues|sales|profit|loss|results))|\s+(?:employs|employed|acquired|acquires)\b|"
    r"\s+chief executive\s+(?-i:[A-Z])|,\s+(?:a|an|the)\s+(?:[\w-]+\s+){0,4}?(?:company|startup|maker|firm|lender|bank|"
    r"manufacturer|supplier|producer|retailer|operator|provider|developer|group)\b)"
)
# A role, or a title, that only a person holds, right before the name or after it with a comma.
_PERSON_BEFORE = (
    r"(?:chief executive|chief financial officer|chief operating officer|ceo|cfo|coo|founder|co-founder|"
    r"chairman|chairwoman|chairperson|analyst|spokesperson|spokesman|spokeswoman|minister|mr|ms|mrs|dr)\.?"
)
_PERSON_AFTER = r",\s+(?:the\s+)?(?:company's\s+|its\s+)?(?:chief|ceo|cfo|founder|co-founder|analyst|chair|head)\b"


def _place_cue(name: str, sentence: str) -> str:
    target = name_pattern(name)
    pattern = rf"(?:\b([\w-]+)\s+)?\b{_PLACE_BEFORE}\s+(?:the\s+)?{target}(?!-(?!based))"
    for match in re.finditer(pattern, sentence, flags=re.I):
        if (match.group(1) or "").lower() not in _NOT_A_PLACE_BEFORE:
            return match.group(0)
    return first_match((rf"{target}-based\b",), sentence)


def _product_cue(name: str, sentence: str) -> str:
    target = name_pattern(name)
    return first_match(
        (
            rf"{target}\s+{_PRODUCT_AFTER}\b(?!\s+{_SITE})",  # "Seville battery plant" is a plant
            rf"\b{_PRODUCT_BEFORE}\s+(?:the\s+|its\s+|a\s+)?{target}(?!-)",
        ),
        sentence,
    )


def _company_cue(name: str, sentence: str) -> str:
    target = name_pattern(name)
    # "acquire the Riga startup", "acquire Riga-based X": a company's own name takes no article and no
    # hyphen; a name that does only modifies the noun after it.
    return first_match((rf"{target}{_COMPANY_AFTER}", rf"\b{_COMPANY_BEFORE}\s+{target}(?!-)"), sentence)


def _person_cue(name: str, sentence: str) -> str:
    target = name_pattern(name)
    return first_match((rf"\b{_PERSON_BEFORE}\s+{target}", rf"{target}{_PERSON_AFTER}"), sentence)


_SENTENCE_CUES = {"place": _place_cue, "product": _product_cue, "company": _company_cue, "person": _person_cue}


def name_cue(name: str) -> tuple[str, str]:
    """The kind a name's own form gives it ("Port of Rotterdam", "Bluefin Foods AS"), or ("", "")."""
    stripped = name.strip()
    for kind, pattern in (("place", _PLACE_NAME), ("company", _COMPANY_NAME), ("product", _PRODUCT_NAME)):
        match = pattern.search(stripped)
        if match and len(stripped.split()) > 1:
            return kind, stripped
    return "", ""


def kind_cues(name: str, sentences: Iterable[str]) -> dict[str, str]:
    """Each kind that the name's form or a sentence holding it gives the name, with the first phrase that does."""
    found: dict[str, str] = {}
    name = re.sub(r"^the\s+", "", name.strip(), flags=re.I)  # "The Seville" is Seville, wherever it stands
    kind, phrase = name_cue(name)
    if kind:
        found[kind] = phrase
    lowered = name.lower()
    for sentence in sentences:
        if lowered not in sentence.lower():
            continue
        for kind, rule in _SENTENCE_CUES.items():
            if kind not in found and (phrase := rule(name, sentence)):
                found[kind] = phrase
    return found


@dataclass(frozen=True)
class KindReview:
    kind: str = ""
    correction: str = ""
    ambiguity: str = ""


def review_kind(name: str, model_kind: str, sentences: Iterable[str]) -> KindReview:
    """The kind the document's own text gives `name`, if it gives exactly one; else the model's.

    `sentences` are the document's own (title included): another document may use the same
    word for something else, and a review that reads the corpus would correct from a guess."""
    cues = kind_cues(name, sentences)
    if len(cues) > 1:
        said = "; ".join(f"{kind}: '{phrase}'" for kind, phrase in sorted(cues.items()))
        return KindReview(kind=model_kind, ambiguity=f"the document gives '{name}' more than one kind ({said})")
    if not cues:
        return KindReview(kind=model_kind)
    [(kind, phrase)] = cues.items()
    if kind == model_kind:
        return KindReview(kind=model_kind)
    return KindReview(kind=kind, correction=f"typed {model_kind}, but the document uses it as a {kind}: '{phrase}'")


@dataclass(frozen=True)
class ToneReview:
    sentiment: str
    correction: str = ""
    contradiction: str = ""  # why the model's tone is contradicted, kept even once corrected
    event_words: tuple[str, ...] = ()  # the event words the corrected tone rests on


def review_tone(model_sentiment: str, text: str) -> ToneReview:
    """The tone the document's event words leave, when they contradict the model's; else the model's."""
    contradiction = tone_contradiction(model_sentiment, text)
    if not contradiction:
        return ToneReview(sentiment=model_sentiment)
    found = event_words(text)
    corrected, words = ("negative", found.negative) if model_sentiment == "positive" else ("positive", found.positive)
    return ToneReview(
        sentiment=corrected,
        correction=f"{contradiction}; set to {corrected}",
        contradiction=contradiction,
        event_words=words,
    )
