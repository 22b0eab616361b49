"""Atomic claims: when a model's split of a sentence may stand in for the sentence.

A split is only worth verifying part by part when each part is a proposition a verifier can
hold true or false (a subject and a predicate) and the parts together still say what the
sentence says. A small model often returns fragments instead ("May 2026", "Quanta Ledger",
"The first half of 2026."): each asserts nothing, so each would be judged unverifiable and sink
a correct sentence. Such a split is invalid; the caller re-asks once and otherwise verifies the
sentence whole. A fragment is a fault of the split, never a reason to reject the sentence.
"""

from __future__ import annotations

import re
from typing import Sequence

from resources.verification.claim_features import content_words

MIN_PROPOSITION_WORDS = 3  # as many content words as the verifier needs to check a claim
MIN_COVERAGE = 0.75  # share of the sentence's content words the parts must keep, together
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+(?:[.,]\d+)*")
# Auxiliaries and frequent irregular verbs of news prose (past and third person); regular past
# tenses are recognised by their ending.
_VERBS = frozenset(
    """
    is are was were be been am has have had do does did will would shall should can could may might must
    says said makes made takes took builds built sells sold pays paid leads led wins won loses lost rises rose
    falls fell grows grew cuts hits sets puts gives gave gets got goes went comes came becomes became begins
    began sees saw tells told leaves left keeps kept holds held brings brought buys bought finds found thinks
    thought knows knew spends spent runs ran means meant meets met sends sent stands stood shuts bids strikes
    struck draws drew flees fled writes wrote plans expects employs owns offers includes remains reports
    announces opens closes hires fires launches raises posts aims wants needs serves ships signs agrees
    """.split()
)
_NOT_VERBS_ED = frozenset({"red", "bed", "shed", "need", "seed", "feed", "speed", "hundred", "based", "united"})


def has_verb(tokens: Sequence[str]) -> bool:
    """Whether a verb-like word follows at least one other word (a subject before the predicate)."""
    for position, token in enumerate(tokens):
        word = token.lower()
        if position == 0 or not token[0].islower():
            continue
        if word in _VERBS or (word.endswith("ed") and len(word) > 4 and word not in _NOT_VERBS_ED):
            return True
    return False


def proposition_problem(text: str) -> str:
    """Why `text` is not a standalone proposition, or "" when it is one."""
    tokens = _TOKEN.findall(text)
    if len(content_words(text)) < MIN_PROPOSITION_WORDS:
        return f"{text!r} is a fragment (fewer than {MIN_PROPOSITION_WORDS} content words)"
    if not has_verb(tokens):
        return f"{text!r} is a fragment (no subject and verb)"
    return ""


def split_problem(sentence: str, parts: Sequence[str]) -> str:
    """Why `parts` is not a valid split of `sentence`, or "" when it is: every part a proposition,
    and together they keep most of the sentence's content words."""
    if not parts:
        return "no atomic claims"
    problems = [p for p in (proposition_problem(part) for part in parts) if p]
    if problems:
        return "; ".join(problems)
    needed = content_words(sentence)
    kept = set().union(*(content_words(part) for part in parts))
    coverage = len(needed & kept) / len(needed) if needed else 1.0
    if coverage < MIN_COVERAGE:
        missing = ", ".join(sorted(needed - kept)[:6])
        return f"the parts leave out words of the sentence ({coverage:.0%} kept; missing: {missing})"
    return ""
