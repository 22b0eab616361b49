"""What a claim verdict is decided from: candidate evidence passages and the features of a claim against them.

Summary sentences often fuse facts from neighbouring source sentences, so a candidate is a
single sentence or a window of 2 to 3 adjacent sentences of one chunk. Only sentences are
embedded: a window's vector is the normalized sum of its sentences' vectors, so windows cost
no extra embedding (the bundled embedder manages ~8 three-sentence windows a second on 2 cores). The features are the
ones a calibrated classifier can weigh (no thresholds here): how close the best candidate is
in embedding space, and whether it covers the claim's numbers, dates, named entities and
content words, or flips its polarity. Pure functions over texts and vectors, so the same code
serves the `ClaimVerifier` (evidence from the index) and the benchmark harness (evidence = article).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from pydantic import BaseModel

from resources.documents.text import has_negation, numbers_in, split_sentences, words_in
from resources.verification.claim_names import missing_names

WINDOW_SIZES = (1, 2, 3)
BASE_FEATURE_NAMES = (
    "similarity",
    "sentence_similarity",
    "similarity_margin",
    "number_coverage",
    "date_coverage",
    "entity_coverage",
    "lexical_coverage",
    "evidence_lexical_coverage",
    "negation_mismatch",
    "antonym_mismatch",
    "claim_length",
    "all_evidence_coverage",
    "all_evidence_number_coverage",
    "novel_words",
)
# How the claim's wording sits in the evidence: copied runs, word pairs kept together, a candidate
# both close in meaning and covering the claim's words, names found near it or nowhere, and
# degenerate repetition (a failure of small generators). Offered to model selection, which keeps
# them only if cross-validation on the fit data says they help (FACT_CHECKING.md).
STRUCTURE_FEATURE_NAMES = (
    "bigram_coverage",
    "longest_common_run",
    "support",
    "local_entity_coverage",
    "novel_entities",
    "repetition",
)
# The claim's facts taken together (content words, numbers, dates and names): the share the best
# candidate holds, and the share the whole evidence lacks. A sentence that adds one invented detail
# to an otherwise copied one scores high on similarity and low on neither of the separate
# coverages; the joint share sees it. Offered to model selection like the structure features.
FACT_FEATURE_NAMES = ("fact_coverage", "novel_content")
FEATURE_NAMES = BASE_FEATURE_NAMES + STRUCTURE_FEATURE_NAMES + FACT_FEATURE_NAMES
JUDGE_FEATURE = "judge"
# Not a classifier feature: how many of the claim's names the retrieved evidence lacks, for the
# deterministic name rule (`resources.verification.claim_verification.missing_facts`), which holds whatever the classifier says.
NAMES_MISSING = "names_missing"
# Why the best candidate contradicts the claim (one-hot); they separate refuted from not-enough-info.
CONFLICT_KINDS = ("number", "date", "negation", "antonym", "entity")
REFUTE_FEATURE_NAMES = ("similarity", "lexical_coverage", *(f"conflict_{k}" for k in CONFLICT_KINDS))

STOPWORDS = frozenset(
    "the a an of in on at to for and or by with from as is was were are be been its it that this "
    "has have had than which who will would per he she they his her their them we our you i said says "
    "after before over into about up out not no but also more most can could may might s t".split()
)
_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday sunday"
).split()
_DATE_WORDS = frozenset(_MONTHS) | {"yesterday", "today", "tomorrow", "week", "month", "year"}
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_ENTITY = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-zA-Z\-']+(?:\s+[A-Z][a-zA-Z\-']+)*)")
_ANTONYMS = {
    a: b
    for x, y in [
        ("rise", "fall"),
        ("rose", "fell"),
        ("increase", "decrease"),
        ("increased", "decreased"),
        ("up", "down"),
        ("win", "lose"),
        ("won", "lost"),
        ("gain", "loss"),
        ("higher", "lower"),
        ("more", "less"),
        ("before", "after"),
        ("first", "last"),
        ("larger", "smaller"),
        ("biggest", "smallest"),
        ("open", "closed"),
        ("approved", "rejected"),
        ("accepted", "rejected"),
        ("guilty", "innocent"),
        ("alive", "dead"),
        ("male", "female"),
        ("man", "woman"),
        ("men", "women"),
        ("profit", "loss"),
        ("hired", "fired"),
        ("expanded", "cut"),
        ("raised", "lowered"),
        ("start", "end"),
        ("started", "ended"),
        ("best", "worst"),
    ]
    for a, b in [(x, y), (y, x)]
}


class Passage(BaseModel):
    """Evidence text with where it came from (a chunk id, or an article id)."""

    chunk_id: str
    text: str


class Candidate(BaseModel):
    """A sentence or a window of adjacent sentences inside one passage."""

    chunk_id: str
    text: str
    parts: list[str]

    @property
    def sentences(self) -> int:
        return len(self.parts)


class ClaimFeatures(BaseModel):
    """The feature values of one claim and the candidate they were measured on."""

    values: dict[str, float]
    best: Candidate | None = None
    conflict: str = ""
    missing_names: list[str] = []


def candidates_of(passages: Sequence[Passage]) -> list[Candidate]:
    """Every sentence and every window of 2-3 adjacent sentences of each passage, deduplicated."""
    seen: set[str] = set()
    out: list[Candidate] = []
    for passage in passages:
        sentences = [s.text for s in split_sentences(passage.text)]
        for size in WINDOW_SIZES:
            for start in range(0, max(len(sentences) - size + 1, 0)):
                parts = sentences[start : start + size]
                text = " ".join(parts)
                if text not in seen:
                    seen.add(text)
                    out.append(Candidate(chunk_id=passage.chunk_id, text=text, parts=parts))
    return out


def sentences_to_embed(candidates: Sequence[Candidate]) -> list[str]:
    return list(dict.fromkeys(c.text for c in candidates if c.sentences == 1))


def candidate_vectors(candidates: Sequence[Candidate], sentence_vectors: dict[str, np.ndarray]) -> np.ndarray:
    """One normalized row per candidate: a sentence's own vector, or the normalized sum over a window."""
    if not candidates:
        return np.zeros((0, 1), dtype=np.float32)
    rows = np.stack([np.sum([sentence_vectors[p] for p in c.parts], axis=0) for c in candidates])
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1, norms)


def content_words(text: str) -> set[str]:
    return {w for w in words_in(text) if w not in STOPWORDS and not w.isdigit()}


def dates_in(text: str) -> set[str]:
    """Month and weekday names and years. A lowercase "may" or "march" is usually a verb: months
    count when capitalised, or (in all-lowercase text) when unambiguous."""
    capitalised = {m.group().lower() for m in re.finditer(r"\b[A-Z][a-z]+\b", text)}
    lowered = words_in(text) - {"may", "march"} if text == text.lower() else set()
    return ((capitalised | lowered) & frozenset(_MONTHS)) | set(_YEAR.findall(text))


def entities_in(text: str) -> set[str]:
    """Capitalised words not at a sentence start, lowercased: names of people, places, organisations."""
    found = set()
    for match in _ENTITY.finditer(text):
        for word in match.group(1).split():
            if word.lower() not in STOPWORDS and word.lower() not in _DATE_WORDS:
                found.add(word.lower())
    return found


def claim_entities(claim: str, evidence: str) -> set[str]:
    """The claim's names. A claim written all in lower case (some summarizers' output) has no
    capitals to go by, so its words that the evidence capitalises mid-sentence count as names."""
    if claim != claim.lower():
        return entities_in(claim)
    return words_in(claim) & entities_in(evidence)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _bigrams(words: Sequence[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:]))


def longest_common_run(claim: Sequence[str], evidence: Sequence[str]) -> int:
    """Length of the longest sequence of consecutive tokens that claim and evidence share."""
    positions: dict[str, list[int]] = {}
    for j, token in enumerate(evidence):
        positions.setdefault(token, []).append(j)
    best, previous = 0, {}
    for token in claim:
        current = {j: previous.get(j - 1, 0) + 1 for j in positions.get(token, ())}
        best = max([best, *current.values()])
        previous = current
    return best


def repetition(words: Sequence[str]) -> float:
    """Share of the claim's word triples that occur in it more than once."""
    triples = list(zip(words, words[1:], words[2:]))
    return (len(triples) - len(set(triples))) / len(triples) if triples else 0.0


def _coverage(needed: set[str], available: set[str]) -> float:
    return 1.0 if not needed else len(needed & available) / len(needed)


def antonym_mismatch(claim: str, evidence: str) -> bool:
    claim_words, evidence_words = words_in(claim), words_in(evidence)
    return any(_ANTONYMS.get(w) in evidence_words and w not in evidence_words for w in claim_words)


def conflict_between(claim: str, sentence: str) -> str:
    """Why a sentence about the same thing contradicts the claim, or "" if it does not.

    Only sentences that share most of the claim's content words qualify: a different
    number in an unrelated sentence is not a contradiction.
    """
    claim_words = content_words(claim)
    if not claim_words or len(claim_words & content_words(sentence)) / len(claim_words) < 0.4:
        return ""
    claim_numbers, sentence_numbers = numbers_in(claim), numbers_in(sentence)
    if claim_numbers and sentence_numbers and not claim_numbers <= sentence_numbers:
        return "number"
    months = frozenset(_MONTHS)
    claim_months, sentence_months = dates_in(claim) & months, dates_in(sentence) & months
    if claim_months and sentence_months and not claim_months <= sentence_months:
        return "date"
    if has_negation(claim) != has_negation(sentence):
        return "negation"
    if antonym_mismatch(claim, sentence):
        return "antonym"
    if entities_in(claim) - words_in(sentence):
        return "entity"
    return ""


def claim_features(
    claim: str, claim_vector: np.ndarray, candidates: Sequence[Candidate], vectors: np.ndarray
) -> ClaimFeatures:
    """Features of a claim against its candidates (`vectors`: one normalized row per candidate)."""
    words = content_words(claim)
    length = min(len(words) / 20.0, 1.5)
    if not candidates:
        values = {name: 0.0 for name in FEATURE_NAMES}
        values.update(
            claim_length=length,
            novel_words=min(len(words), 5) / 5,
            repetition=repetition(tokens(claim)),
            novel_content=1.0,
        )
        return ClaimFeatures(values=values)
    similarities = vectors @ claim_vector
    # Rank by similarity, with lexical coverage breaking near-ties: windows are longer and
    # embed a little differently, so the plain maximum over-prefers single sentences.
    coverage = np.array([_coverage(words, content_words(c.text)) for c in candidates])
    best_index = int(np.argmax(similarities + 0.05 * coverage))
    best = candidates[best_index]
    singles = [i for i, c in enumerate(candidates) if c.sentences == 1]
    sentence_similarity = float(similarities[singles].max()) if singles else float(similarities.max())
    ordered = np.sort(similarities)[::-1]
    top = [candidates[i].text for i in np.argsort(-similarities)[:5]]
    evidence_text = " ".join(top + [best.text])
    all_words: set[str] = set().union(*(words_in(c.text) for c in candidates))
    all_dates: set[str] = set().union(*(dates_in(c.text) for c in candidates))
    all_numbers: set[str] = set().union(*(numbers_in(c.text) for c in candidates))
    novel = [w for w in words if w not in all_words]
    article = " ".join(c.text for c in candidates if c.sentences == 1)
    names = claim_entities(claim, article)
    claim_tokens, best_tokens = tokens(claim), tokens(best.text)
    facts = words | numbers_in(claim) | dates_in(claim) | names
    best_facts = words_in(best.text) | numbers_in(best.text) | dates_in(best.text)
    claim_bigrams = _bigrams(claim_tokens)
    values = {
        "similarity": float(similarities[best_index]),
        "sentence_similarity": sentence_similarity,
        "similarity_margin": float(ordered[0] - ordered[min(len(ordered) - 1, 5)]),
        "number_coverage": _coverage(numbers_in(claim), numbers_in(best.text)),
        "date_coverage": _coverage(dates_in(claim), all_dates),
        "entity_coverage": _coverage(names, all_words),
        "lexical_coverage": float(coverage[best_index]),
        "evidence_lexical_coverage": _coverage(words, content_words(evidence_text)),
        "negation_mismatch": float(has_negation(claim) != has_negation(best.text)),
        "antonym_mismatch": float(antonym_mismatch(claim, best.text)),
        "claim_length": length,
        # Over all the evidence, not just the best candidate: words, numbers the claim brings from nowhere.
        "all_evidence_coverage": 1 - len(novel) / max(len(words), 1),
        "all_evidence_number_coverage": _coverage(numbers_in(claim), all_numbers),
        "novel_words": min(len(novel), 5) / 5,
        "bigram_coverage": len(claim_bigrams & _bigrams(best_tokens)) / len(claim_bigrams) if claim_bigrams else 1.0,
        "longest_common_run": longest_common_run(claim_tokens, best_tokens) / max(len(claim_tokens), 1),
        "support": float(np.max(similarities * coverage)),
        "local_entity_coverage": _coverage(names, words_in(best.text)),
        "novel_entities": min(len(names - all_words), 3) / 3,
        "repetition": repetition(claim_tokens),
        "fact_coverage": _coverage(facts, best_facts),
        "novel_content": 1 - _coverage(facts, all_words | all_numbers | all_dates),
    }
    conflict = conflict_between(claim, best.text)
    values.update({f"conflict_{kind}": float(conflict == kind) for kind in CONFLICT_KINDS})
    # Against all the retrieved evidence, not the best candidate alone: a summary sentence often
    # names in full someone its best sentence calls by a pronoun or a surname (FACT_CHECKING.md).
    absent = missing_names(claim, article, article)
    values[NAMES_MISSING] = float(len(absent))
    return ClaimFeatures(values=values, best=best, conflict=conflict, missing_names=absent)


QUOTE_COVERAGE = 0.8  # share of the claim's content words a quote must hold to state the claim


def quote_states_claim(claim: str, quote: str) -> bool:
    """Whether a quote says what the claim says: every number, date and name of the claim occurs
    in it, it holds most of the claim's content words, and nothing in it conflicts with the claim
    (no other number or month, no negation or antonym). A judge that calls such a quote a
    contradiction has misread it, so its refutation cannot stand."""
    if not quote.strip():
        return False
    if not numbers_in(claim) <= numbers_in(quote) or not dates_in(claim) <= dates_in(quote):
        return False
    if entities_in(claim) - words_in(quote):
        return False
    if _coverage(content_words(claim), content_words(quote)) < QUOTE_COVERAGE:
        return False
    return not conflict_between(claim, quote)
