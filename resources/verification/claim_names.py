"""The names a claim states, and whether the evidence retrieved for it holds them.

A sentence that copies its evidence but swaps in an invented person or company ("Quanta Ledger
chief executive Jonas Berg said ...", where the evidence names someone else) stays close to the
evidence in every similarity and word-coverage feature, so a classifier accepts it. The name is
the fact at stake, so it is checked as such: evidence that does not hold a name of the claim cannot
support the claim, like evidence that lacks its number or names another month (DESIGN.md section
5). This module only finds names and looks them up; `resources.verification.claim_features` looks them up in
all the retrieved evidence (a summary sentence often names in full someone its best evidence
sentence calls "he" or by a surname) and `resources.verification.claim_verification.missing_facts` applies the rule.

What counts as a name in cased text: a run of two or more capitalised words (its first word may
open the sentence, as in "Jonas Berg said"), or a single capitalised word that does not open a
sentence; common words, months, weekdays and honorifics are never name words, nor are single
letters (initials). A name is held by the evidence when each of its words occurs there in any case
(possessives and hyphenated forms split into words, so "Berg's" and "Berg" match, and a surname
alone matches the full name), or when it is an acronym spelt by the initials of a capitalised run
of the evidence ("ECB" and "European Central Bank", either way round). Text written all in lower
case has no capitals to go by: its names are its words that the evidence capitalises as names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resources.documents.text import words_in

# Never name words, even capitalised: function words, months and weekdays, honorifics, and words
# that often open a sentence before a name ("Despite Quanta's loss ..."). A claim is short, so a
# small list is enough; a false name costs a wrongly refused sentence, which refinement rewords.
COMMON_WORDS = frozenset(
    """
    a an the of in on at to for and or but nor by with from as is was were are be been being its it
    that this these those there here has have had than which who whom whose what when where why how
    will would shall should can could may might must do does did not no yes also more most less many
    much some any each every both all other another such own same so very just only even still yet
    he she they his her their them we our you your i me my us him it's s t
    after before over into about up out down off under between through during since until while
    although though because if unless whether despite however meanwhile moreover furthermore
    according following last next first new former late earlier later today yesterday tomorrow now then
    said says say
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec
    monday tuesday wednesday thursday friday saturday sunday
    mr mrs ms miss dr prof sir dame lord lady st
    """.split()
)
# Lower-case words that may sit inside a name: "Bank of England", "Vincent van Gogh".
CONNECTORS = frozenset({"of", "for", "the", "de", "del", "der", "van", "von", "la", "le", "du", "da", "&"})
# All-capital abbreviations that name a role, a unit or a currency, not someone or something.
COMMON_ABBREVIATIONS = frozenset("ceo cfo coo cto cio gdp ipo ai tv pm am hr pr id ok usd eur gbp".split())

_CLAUSE_END = re.compile(r"[.!?:;]['\"’”)\]]*$")
_OPENING = "\"'“‘([«"
_EDGE = "\"'“”‘’()[]«»,.;:!?"


@dataclass(frozen=True)
class Name:
    """A name as written in the text, and the lower-case words it is looked up by."""

    text: str
    words: tuple[str, ...]

    def initials(self) -> str:
        return "".join(w[0] for w in self.words)


def _is_capitalised(word: str) -> bool:
    return bool(word) and word[0].isupper()


def _key_words(text: str) -> tuple[str, ...]:
    return tuple(
        w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 1 and w not in COMMON_WORDS and not w.isdigit()
    )


def names_in(text: str) -> list[Name]:
    """The names of a cased text, in order, as runs of capitalised words (see the module docstring)."""
    names: list[Name] = []
    run: list[str] = []
    run_opens = False  # whether the run's first word opens a sentence

    def close() -> None:
        nonlocal run, run_opens
        while run and run[-1].lower() in CONNECTORS:
            run.pop()
        if run_opens and len(run) > 2 and run[1].lower() in CONNECTORS:  # "Shares of Quanta": not one name
            run, run_opens = run[2:], False
        capitalised = [w for w in run if _is_capitalised(w) and w.lower() not in COMMON_WORDS]
        opening_word_alone = run_opens and len(capitalised) == 1 and run[0] == capitalised[0]
        if capitalised and not opening_word_alone:
            shown = " ".join(run[run.index(capitalised[0]) : run.index(capitalised[-1]) + 1])
            words = _key_words(shown)
            if words and not (len(words) == 1 and words[0] in COMMON_ABBREVIATIONS):
                names.append(Name(shown, words))
        run = []

    opens = True
    for token in text.split():
        word = re.sub(r"['’]s$", "", token.strip(_EDGE))
        starts = opens or token[0] in _OPENING
        if starts:
            close()
        if _is_capitalised(word):
            if not run:
                run_opens = starts
            run.append(word)
        elif run and word.lower() in CONNECTORS and run[-1].lower() not in CONNECTORS:
            run.append(word)  # one connector inside a name; "Berg of the Bank" is two names
        else:
            close()
        opens = bool(_CLAUSE_END.search(token))
        if opens or token[-1] in _EDGE:
            close()
    close()
    return names


def _acronyms(text: str) -> set[str]:
    """Initials of every run of two or more name words in the text: what an acronym of it spells."""
    spelt: set[str] = set()
    for name in names_in(text):
        for start in range(len(name.words)):
            for end in range(start + 2, len(name.words) + 1):
                spelt.add("".join(w[0] for w in name.words[start:end]))
    return spelt


def claim_names(claim: str, context: str) -> list[Name]:
    """The claim's names; in an all-lower-case claim, its words that the context capitalises as names."""
    if claim != claim.lower():
        return names_in(claim)
    capitalised = {w for name in names_in(context) for w in name.words}
    return [Name(w, (w,)) for w in dict.fromkeys(re.findall(r"[a-z0-9]+", claim)) if w in capitalised]


def is_held(name: Name, evidence_words: set[str], evidence_acronyms: set[str]) -> bool:
    """Whether the evidence holds the name: every word of it, or it as an acronym, or its acronym."""
    if set(name.words) <= evidence_words:
        return True
    if len(name.words) == 1 and name.text.isupper() and len(name.text) >= 2:
        return name.words[0] in evidence_acronyms
    return len(name.words) >= 2 and name.initials() in evidence_words


def missing_names(claim: str, evidence: str, context: str = "") -> list[str]:
    """The claim's names (as written) that the evidence does not hold. `context`, the whole
    retrieved evidence, tells the names of an all-lower-case claim (defaults to the evidence)."""
    words, acronyms = words_in(evidence), _acronyms(evidence)
    found = claim_names(claim, context or evidence)
    return list(dict.fromkeys(n.text for n in found if not is_held(n, words, acronyms)))
