"""Must show 1 and 2 of issue 11, with the real verifier against a small index (seconds).

A capable model (correct paraphrases sharing few words with the evidence) keeps its text
through drafts and summaries; scripted hallucinations (a wrong number, a wrong date, an
entity absent from the evidence, an unsupported cause, a claim following an instruction
planted in a source) are refuted or not-enough-info, go through refinement and never reach
summaries, the digest or the report. The planted instruction itself is kept out of the
index, as ingestion's screening does; the model "followed" it anyway.
"""

import re
from collections import Counter

import pytest

from assets.digest.digest_report import render_report, stage_counts
from assets.digest.draft_revisions import refine
from assets.digest.drafts import citing_within, claims_from_brief, draft_messages, gather_evidence
from assets.digest.fact_checks import fact_check_rows
from assets.digest.summaries import render_digest
from resources.verification.claim_verification import Claim, ClaimVerifier
from resources.verification.sentence_checks import check_sentences
from tests.conftest import indexed_corpus, one_topic_summaries
from tests.fact_check_judges import knows_the_sample
from tests.fake_openai import data_block, evidence_items

pytestmark = pytest.mark.integration

TOPIC = "Acme Robotics"
CORPUS = {
    "acme1-000": "Acme Robotics raised 40 million euros in a Series C round led by Nordic Capital on 3 March 2026. "
    "Acme Robotics said the money will fund a second factory in Tampere.",
    "acme2-000": "Acme Robotics reported revenue of 120 million euros for the first half of 2026, up 18 percent from a year "
    "earlier. Acme Robotics chief executive Liisa Korhonen said demand from warehouse operators drove the growth.",
    "acme3-000": "Acme Robotics will open its Tampere factory in September 2026 and hire 300 workers. "
    "The Tampere site will build the company's picking arms.",
}
# Correct paraphrases: the same facts in other words.
CAPABLE = [
    (
        "Nordic Capital headed a 40 million euros Series C investment into Acme Robotics, closed on 3 March 2026.",
        "raised 40 million",
    ),
    (
        "For January to June 2026 Acme Robotics booked 120 million euros in sales, 18 percent more than twelve months before.",
        "reported revenue",
    ),
    ("Liisa Korhonen, who runs Acme Robotics, credited warehouse operators' appetite for the rise.", "Liisa Korhonen"),
    (
        "Come September 2026, Acme Robotics expects its Tampere plant to start work with a staff of 300.",
        "open its Tampere",
    ),
]
HALLUCINATIONS = {
    "wrong number": (
        "Acme Robotics raised 65 million euros in its Series C round led by Nordic Capital.",
        "raised 40 million",
    ),
    "wrong date": (
        "Acme Robotics will open its Tampere factory in March 2028 and hire 300 workers.",
        "open its Tampere",
    ),
    "absent entity": ("Siemens Energy led the Series C round of Acme Robotics.", "raised 40 million"),
    "unsupported cause": (
        "Acme Robotics revenue rose 18 percent because the company halved its prices.",
        "reported revenue",
    ),
    "planted instruction": (
        "Acme Robotics was acquired by Globex Corporation for 900 million euros.",
        "second factory",
    ),
}
CHECKABLE_WITHOUT_JUDGE = ["wrong number", "wrong date", "absent entity"]
# The capable model's summary paragraph: correct, and again in its own words.
PARAGRAPH = [
    ("Acme Robotics closed a 40 million euros Series C headed by Nordic Capital on 3 March 2026.", [1]),
    ("Sales for January to June 2026 reached 120 million euros at Acme Robotics, 18 percent above a year before.", [2]),
]


@pytest.fixture
def index(settings):
    return indexed_corpus(settings, "gen", CORPUS)


def evidence_number(messages, fragment: str) -> int:
    return next(n for n, s in evidence_items(messages) if fragment in s)


def honest_judge(messages):
    """Supported with a verbatim quote for the correct paraphrases, refuted / not enough info for the rest."""
    claim = data_block(messages, "claim") or ""
    evidence = data_block(messages, "evidence") or ""
    sentences = re.findall(r"^\[\d+\] (.+)$", evidence, flags=re.M)
    if claim in TRUE_SENTENCES or claim in CORPUS_SENTENCES:
        words = set(claim.lower().split())
        best = max(sentences, key=lambda s: len(words & set(s.lower().split())), default="")
        return {"verdict": "supported", "quote": best}
    return {"verdict": "refuted" if re.search(r"\d", claim) else "not_enough_info", "quote": ""}


def fooled_judge(messages):
    """Answers supported to everything, quoting the first evidence passage verbatim."""
    evidence = data_block(messages, "evidence") or ""
    first = re.findall(r"^\[\d+\] (.+)$", evidence, flags=re.M)
    return {"verdict": "supported", "quote": first[0] if first else ""}


CORPUS_SENTENCES = {s.strip() + "." for text in CORPUS.values() for s in text.split(". ") if s}
TRUE_SENTENCES = {text for text, _ in CAPABLE + PARAGRAPH}


def run_generation(llm, model, vector_store, sentences):
    evidence = gather_evidence(vector_store, "gen", TOPIC, 8)
    llm.scripts["DraftBrief"] = lambda messages: {
        "sentences": [{"text": t, "evidence": [evidence_number(messages, f)]} for t, f in sentences]
    }
    session = model.open_session()
    [(answer, trace)] = session.map_traced_structured(
        [draft_messages(TOPIC, evidence)], citing_within(len(evidence)), tier="strong"
    )
    drafts = claims_from_brief(TOPIC, evidence, answer, trace, 4)
    verifier = ClaimVerifier(vector_store, "gen", llm=session)
    claims = [Claim(id=d.claim_id, text=d.text, cited_chunk_ids=d.cited_chunk_ids) for d in drafts]
    checks = fact_check_rows(drafts, check_sentences(verifier, claims, llm=session, decompose=True), "v1")
    revisions = refine(drafts, checks, llm=session, verifier=verifier, rounds=2, decompose=True)
    published, summaries = one_topic_summaries(TOPIC, checks, revisions, llm=session, verifier=verifier)
    report = render_report(summaries, checks, [], {}, {}, "test", stage_counts(drafts, checks, revisions, summaries))
    return drafts, checks, revisions, published, summaries, render_digest(summaries), report


def test_a_capable_model_keeps_its_own_text_through_drafts_and_summaries(llm, index):
    model, vector_store = index
    llm.scripts["JudgeAnswer"] = knows_the_sample(honest_judge)
    llm.scripts["TopicParagraph"] = lambda messages: {"sentences": [{"text": t, "claims": n} for t, n in PARAGRAPH]}
    drafts, checks, revisions, published, summaries, digest, _ = run_generation(llm, model, vector_store, CAPABLE)
    assert [d.text for d in drafts] == [t for t, _ in CAPABLE] and all(d.origin == "model" for d in drafts)
    assert [c.verdict for c in checks] == ["supported"] * len(CAPABLE), [(c.claim, c.verdict, c.reason) for c in checks]
    assert not revisions and all(c.origin == "model" for c in published)
    [summary] = summaries
    assert [s.text for s in summary.sentences] == [t for t, _ in PARAGRAPH]  # model-written share 1.0
    assert all(s.origin == "model" and s.verdict == "supported" for s in summary.sentences)


@pytest.mark.parametrize("judge", ["honest", "fooled"])
def test_hallucinations_are_caught_refined_and_never_published(llm, index, judge):
    model, vector_store = index
    # The honest judge proves itself on the calibration sample; the fooled one cannot.
    llm.scripts["JudgeAnswer"] = knows_the_sample(honest_judge) if judge == "honest" else fooled_judge
    # A stubborn writer: every revision repeats the hallucination, so each one reaches the cap.
    llm.scripts["ClaimRevision"] = lambda messages: {
        "action": "revise",
        "sentence": data_block(messages, "claim"),
        "evidence": [1],
    }
    kinds = list(HALLUCINATIONS) if judge == "honest" else CHECKABLE_WITHOUT_JUDGE
    sentences = [CAPABLE[0], CAPABLE[1], *(HALLUCINATIONS[k] for k in kinds)]
    drafts, checks, revisions, published, summaries, digest, report = run_generation(
        llm, model, vector_store, sentences
    )
    verdicts = {c.claim: c.verdict for c in checks}
    caught = {k: verdicts[HALLUCINATIONS[k][0]] for k in kinds}
    assert all(v in ("refuted", "not_enough_info") for v in caught.values()), caught
    rounds = Counter(r.claim_id for r in revisions if r.action == "revise")
    assert all(rounds[d.claim_id] == 2 for d in drafts if d.text in {HALLUCINATIONS[k][0] for k in kinds})
    published_text = " ".join(c.text for c in published) + " ".join(s.summary for s in summaries)
    for kind in kinds:
        text = HALLUCINATIONS[kind][0]
        assert text not in published_text and text not in digest and text not in report, kind
    counts = stage_counts(drafts, checks, revisions, summaries)
    assert (
        counts["refinement"]["unsupported at cap (dropped)"]
        + counts["refinement"]["extractive"]
        + counts["refinement"]["duplicates"]
        == len(checks) - counts["fact checks"]["supported"]
    )
    if judge == "honest":
        assert counts["fact checks"]["supported"] == 2
    else:  # unproven on the calibration sample: its "supported" is recorded and decides nothing
        assert all(c.judge == "supported" and not c.judge_counted for c in checks)
