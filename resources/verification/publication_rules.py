"""Publication rules: deterministic tests of model-written text that no judge can overrule.

A verifier decides whether a sentence is true; these rules decide whether it is fit to
be read at all. A small model echoes its own instructions, repeats a sentence it wrote
for another topic, opens a paragraph with a stray "2026:" label or with "The company"
that refers to nothing, and copies evidence-list furniture (a title and a date) as if
it were a sentence. Each of those can be true to the evidence and still be junk, and a
judge that is itself a small model lets them through. So they are caught by rules that
look only at the words: the same answer on every run, whatever model wrote the text.

Pure functions on strings: the assets that publish text decide what a broken rule costs
(a re-ask, a dropped sentence, a repaired start) and count it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from resources.documents.text import normalize

# A delimited data block of a prompt (see resources.guardrails.prompt_injection.data_block): data, not instructions.
_DATA_BLOCK = re.compile(r"<([a-z_]+)>\n.*?\n</\1>", re.S)
_WORD = re.compile(r"[a-z0-9]+")

# The rules, by the names their counts carry in metadata.
PROMPT_ECHO = "prompt_echo"
LIST_FURNITURE = "list_furniture"
DANGLING_START_DROPPED = "dangling_start_dropped"
DANGLING_START_REPAIRED = "dangling_start_repaired"
REPEATED_SENTENCE = "repeated_sentence"
RULES = (PROMPT_ECHO, LIST_FURNITURE, DANGLING_START_DROPPED, DANGLING_START_REPAIRED, REPEATED_SENTENCE)

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_YEAR = r"(?:19|20)\d{2}"
# A date or a period standing alone: "2026", "May 2026", "1 December 2026", "2026-12-10",
# "Q3 2026", "the first half of 2026", "fiscal year 2026".
_DATE = (
    rf"(?:{_YEAR}-\d{{2}}(?:-\d{{2}})?"
    rf"|(?:\d{{1,2}}\s+)?{_MONTH}(?:\s+\d{{1,2}},?)?\s+{_YEAR}"
    rf"|(?:q[1-4]|h[12]|fy)\s*{_YEAR}"
    rf"|(?:the\s+)?(?:first|second|third|fourth|last)\s+(?:half|quarter)\s+(?:of\s+)?{_YEAR}"
    rf"|(?:fiscal\s+)?(?:year\s+)?{_YEAR})"
)
_ONLY_DATE = re.compile(rf"^\W*(?:(?:in|on|from|since|as\s+of)\s+)?{_DATE}\W*$", re.I)
_TRAILING_DATE = re.compile(rf"^(?P<title>.+?)\s*(?:,|\(|-|–|—|\|)\s*{_DATE}\W*$", re.I)
# A label before the sentence proper: "2026:", "Q3 2026:", "May 2026 -", "Update:", "[3]", "2.", "- ",
# or the "(title, date)" source tag of a numbered evidence line.
_LABEL = re.compile(
    rf"^\s*(?:(?:{_DATE}|(?:update|summary|brief|note|news|digest|headline|answer|claim|sentence|item)"
    rf"(?:\s+\d+)?)\s*[:–—]\s*|\[\d+\]\s*|\d{{1,2}}[.)]\s+|[-*•]\s+|\([^()]{{0,200}}?,\s*{_DATE}\)\s*)",
    re.I,
)
# Openings that refer back to something: with nothing before them in the paragraph they refer to nothing.
_REFERENT = (
    r"company|firm|group|business|startup|start-up|brand|maker|manufacturer|lender|bank|retailer|insurer|"
    r"operator|provider|chain|carrier|organisation|organization|project|deal|move|plan|product|device|report|"
    r"study|ceo|chief\s+executive|executive|founder|spokesperson|spokesman|spokeswoman"
)
_ANAPHORA = re.compile(
    rf"^\s*(?:it|its|they|their|them|he|his|she|her"
    rf"|(?:the|this|that|these|those)\s+(?:{_REFERENT})s?"
    rf"|the\s+(?:former|latter|same|two|three|other))\b",
    re.I,
)
# Words that make a sentence of a line: auxiliaries and the common verbs of news prose whose
# forms carry no -ed or -s ending. Regular past tenses and third persons are caught by ending.
_VERBS = frozenset(
    """
    is are was were be been being am has have had do does did will would can could shall should may might must
    said say says told tell saw see came come went go goes gone got get gets gave give given took take taken made
    make put set cut hit let led lead leads met meet paid pay sold sell bought buy built build spent spend sent
    send won win lost lose fell fall fallen rose rise risen grew grow grown began begin begun ran run held hold
    kept keep left leave brought bring found find became become chose choose drew draw drove drive broke break
    shut stood stand struck strike wrote write thought think knew know meant mean fought sought seek forecast
    bet rid quit spread split shed sank sink swung swing slid slide threw throw wore wear woke bid
    expect plan open close hire launch report raise reach remain offer need want aim seek agree fail start stop
    add buy sell cost show use help keep warn plan employ own serve supply produce rank account
    climb drop jump soar slip stay double triple top beat miss sign ship halt delay recall acquire merge invest
    """.split()
)
SHORT_LINE_WORDS = 8  # a verbless line this short is a heading or a fragment, not a sentence
_NOT_VERBS_ENDING_S = frozenset({"its", "his", "this", "thus", "plus", "news", "series", "us", "as", "was", "has"})


def words(text: str) -> list[str]:
    """The lower-cased words and numbers of a text, punctuation and spacing dropped."""
    return _WORD.findall(text.lower())


def sentence_key(sentence: str) -> str:
    """A sentence as compared for repetition: case, punctuation and whitespace do not count."""
    return normalize(sentence)


def instruction_text(prompt: str, evidence: str = "") -> str:
    """The prompt without the data it carries: its delimited data blocks and the evidence text."""
    text = _DATA_BLOCK.sub(" ", prompt)
    return text.replace(evidence, " ") if evidence else text


def _runs(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def find_prompt_echo(text: str, prompt: str, evidence: str = "", min_run: int = 6) -> str | None:
    """The longest run of at least `min_run` consecutive words of the prompt's instructions that
    `text` reproduces, else None. Words the evidence (or any data block of the prompt) also has
    in that order are the data's, not the instructions', and never count as an echo."""
    instructions = words(instruction_text(prompt, evidence))
    said = words(text)
    if min_run < 1 or len(said) < min_run or len(instructions) < min_run:
        return None
    data = " ".join([evidence, *(m.group() for m in _DATA_BLOCK.finditer(prompt))])
    echoed = _runs(instructions, min_run) - _runs(words(data), min_run)
    best: list[str] = []
    start = 0
    while start <= len(said) - min_run:
        if tuple(said[start : start + min_run]) not in echoed:
            start += 1
            continue
        end = start + min_run
        while end < len(said) and tuple(said[end - min_run + 1 : end + 1]) in echoed:
            end += 1
        if end - start > len(best):
            best = said[start:end]
        start = end
    return " ".join(best) or None


def repeated_sentence(sentence: str, earlier: Sequence[str], near: float = 0.9) -> str | None:
    """The earlier sentence that `sentence` repeats, else None. A repeat reads the same once case,
    punctuation and whitespace are ignored; a near repeat has the same numbers and words that
    overlap by at least `near` (Jaccard), or adds no word the earlier sentence did not have."""
    key = sentence_key(sentence)
    mine = set(key.split())
    if not mine:
        return None
    numbers = {w for w in mine if w.isdigit()}
    for other in earlier:
        theirs = set(sentence_key(other).split())
        if sentence_key(other) == key or mine <= theirs:
            return other
        if numbers == {w for w in theirs if w.isdigit()} and len(mine & theirs) / len(mine | theirs) >= near:
            return other
    return None


def stray_label(sentence: str) -> str | None:
    """The label a sentence opens with ("2026:", "Q3 2026:", "Update:", "[2]", "- "), else None."""
    match = _LABEL.match(sentence)
    return match.group().strip() if match and match.end() < len(sentence.strip()) else None


def dangling_start(sentence: str, previous: list[str]) -> str | None:
    """Why the sentence cannot open where it stands, else None: it starts with a stray label,
    or, as the first sentence of its paragraph (`previous` empty), with a reference ("It",
    "They", "The company") to something no earlier sentence of the paragraph named."""
    label = stray_label(sentence)
    if label:
        return f"starts with the stray label {label!r}"
    match = _ANAPHORA.match(sentence)
    if match and not any(p.strip() for p in previous):
        return f"starts with {match.group().strip()!r}, which refers to nothing before it in its paragraph"
    return None


def without_label(sentence: str) -> str:
    """The sentence without the stray labels it opens with (capitalized again), else unchanged."""
    text = sentence.strip()
    while (label := _LABEL.match(text)) is not None and label.end() < len(text):
        text = text[label.end() :].strip()
        text = text[:1].upper() + text[1:]
    return text if text != sentence.strip() else sentence


def repair_start(sentence: str, previous: list[str]) -> str | None:
    """The sentence as it may be published: unchanged when it starts well, without its stray
    label when what remains is a sentence, None when it must be dropped."""
    if dangling_start(sentence, previous) is None:
        return sentence
    rest = without_label(sentence)
    if rest == sentence or is_list_furniture(rest) or dangling_start(rest, previous) is not None:
        return None
    return rest


def has_verb(text: str) -> bool:
    """Whether a line has a word that reads as a verb: an auxiliary, a common verb, or a
    lower-case word with a verb's ending (-ed, -s). A heuristic, biased to call a line a sentence."""
    for token in re.findall(r"[A-Za-z][A-Za-z'-]*", text):
        word = token.lower()
        if not token[0].islower():
            continue  # a capitalized word opens the line or belongs to a name or a title
        if word in _VERBS:
            return True
        if len(word) >= 4 and (
            word.endswith("ed")
            or (word.endswith("s") and not word.endswith(("ss", "us", "is", "'s")) and word not in _NOT_VERBS_ENDING_S)
        ):
            return True
    return False


def _title_like(text: str) -> bool:
    """Every word of four letters or more capitalized, as in a headline or a name."""
    long = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]*", text) if len(w) >= 4]
    return bool(long) and all(w[0].isupper() for w in long)


def is_list_furniture(sentence: str) -> bool:
    """Whether a line is a title, a date or a title with a date rather than a sentence: a date
    or period alone ("May 2026"), a verbless title ending in a date ("European Industrial
    Technology Outlook for 2027, 2026-12-10."), a verbless title, or a verbless line of a few words."""
    text = sentence.strip()
    if not words(text) or _ONLY_DATE.match(text):
        return True
    if has_verb(text):
        return False
    trailing = _TRAILING_DATE.match(text)
    return bool(trailing) or _title_like(text) or len(words(text)) <= SHORT_LINE_WORDS


def screen(sentence: str, prompt: str = "", evidence: str = "") -> tuple[str | None, str]:
    """What the rules make of a sentence wherever it stands, before anyone verifies it: None when
    it echoes `prompt` (beside its `evidence`) or is only a title or a date, the sentence without
    its stray label, or the sentence as written; and the rule that changed or dropped it, else ""."""
    if prompt and find_prompt_echo(sentence, prompt, evidence) is not None:
        return None, PROMPT_ECHO
    if is_list_furniture(sentence):
        return None, LIST_FURNITURE
    text = without_label(sentence)
    if text == sentence:
        return sentence, ""
    return (None, DANGLING_START_DROPPED) if is_list_furniture(text) else (text, DANGLING_START_REPAIRED)


def publishable_form(
    sentence: str, paragraph: Sequence[str], earlier: Sequence[str], prompt: str = "", evidence: str = ""
) -> tuple[str | None, str]:
    """The sentence as it may follow `paragraph` (the sentences before it in its paragraph) in a
    document that already published `earlier`, or None; and the rule that changed or dropped it
    ("" when it passes as written). A prompt echo is judged against `prompt` and its `evidence`."""
    screened, rule = screen(sentence, prompt, evidence)
    if screened is None:
        return None, rule
    repaired = repair_start(screened, list(paragraph))
    if repaired is None:
        return None, DANGLING_START_DROPPED
    if repeated_sentence(repaired, earlier) is not None:
        return None, REPEATED_SENTENCE
    return repaired, DANGLING_START_REPAIRED if repaired != sentence else ""


@dataclass
class Publication:
    """One document being published, sentence by sentence: what it holds so far and how often
    each rule dropped or repaired a sentence. Repetition is judged across the whole document
    (a fact told under one topic is not told again under the next), starts within a paragraph."""

    published: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def screen(self, sentence: str, prompt: str = "", evidence: str = "") -> str | None:
        """`screen`, counted: the sentence fit to be verified (a stray label stripped), or None."""
        text, rule = screen(sentence, prompt, evidence)
        if rule:
            self.counts[rule] += 1
        return text

    def admit(self, sentence: str, paragraph: Sequence[str], prompt: str = "", evidence: str = "") -> str | None:
        """The sentence as published (possibly repaired), recorded; or None, counted under its rule."""
        text, rule = publishable_form(sentence, paragraph, self.published, prompt, evidence)
        if rule:
            self.counts[rule] += 1
        if text is not None:
            self.published.append(text)
        return text

    def rule_counts(self) -> dict[str, int]:
        return {rule: self.counts[rule] for rule in RULES}


def breaches(paragraphs: Sequence[Sequence[str]], prompts: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Every published sentence that breaks a rule, with why, for a check to assert there are none.
    `prompts`: per paragraph, the prompt that wrote it and that prompt's evidence (else not checked for echo)."""
    found: list[str] = []
    earlier: list[str] = []
    for index, paragraph in enumerate(paragraphs):
        prompt, evidence = prompts[index] if index < len(prompts) else ("", "")
        for position, sentence in enumerate(paragraph):
            echo = find_prompt_echo(sentence, prompt, evidence) if prompt else None
            reasons = [
                f"echoes the prompt ({echo!r})" if echo else "",
                "is list furniture, not a sentence" if is_list_furniture(sentence) else "",
                dangling_start(sentence, list(paragraph[:position])) or "",
                "repeats an earlier sentence" if repeated_sentence(sentence, earlier) else "",
            ]
            found += [f"{sentence!r} {reason}" for reason in reasons if reason]
            earlier.append(sentence)
    return found
