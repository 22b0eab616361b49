"""A small model's faults do not sink correct sentences, and wrong ones are still caught.

The fake server plays a small model whose claim splitter returns fragments (names, dates and
figures on their own) and whose judge "refutes" every claim by quoting the very sentence that
states it. Correct sentences are still supported and reach the summaries; the scripted wrong
ones (a wrong number, an invented name) are still caught and never published. A judge counts
only when its measurement on the labelled sample shows it helps: the misquoting judge's verdict
is recorded, a capable judge's catches what the classifier alone lets through. Refinement is
capped at a multiple of the drafting calls. Real verifier, real index, seconds.
"""

from __future__ import annotations

from collections import Counter

import pytest

from assets.digest.draft_revisions import refine, refinement_call_cap
from assets.digest.drafts import citing_within, claims_from_brief, draft_messages, gather_evidence
from assets.digest.fact_checks import fact_check_rows, judge_metadata
from assets.digest.summaries import render_digest
from resources.verification.claim_verification import Claim, ClaimVerifier
from resources.verification.sentence_checks import check_sentences
from tests.conftest import indexed_corpus, one_topic_summaries
from tests.fact_check_judges import (
    best_line,
    claim_of,
    knows_the_sample,
    quotes_support_as_contradiction,
    splits_into_fragments,
)
from tests.fake_openai import data_block, evidence_items

pytestmark = pytest.mark.integration

TOPIC = "Quanta Ledger"
COLLECTION = "judged"
CORPUS = {
    "quanta1-000": "Quanta Ledger launched the Quanta Business Card, a debit card for small companies, on 1 December "
    "2026. The Quanta Ledger card has no monthly fee and pays 1 percent cash back on supplier payments.",
    "quanta2-000": "Quanta Ledger reported revenue of 48 million euros for the first half of 2026, up 22 percent from "
    "a year earlier. Quanta Ledger chief executive Marta Kask said small companies in Estonia and Latvia drove the "
    "growth.",
    "quanta3-000": "Quanta Ledger will open an office in Riga in May 2027 and hire 60 engineers. "
    "The Quanta Ledger office in Riga will build the company's invoicing tools.",
}
# What a small model writes when it is right: the evidence, restated closely. (sentence, evidence it cites)
CORRECT = [
    (
        "Quanta Ledger launched the Quanta Business Card, a debit card for small companies, on 1 December 2026.",
        "launched the Quanta",
    ),
    (
        "Quanta Ledger reported revenue of 48 million euros for the first half of 2026, up 22 percent.",
        "reported revenue",
    ),
    ("Quanta Ledger will open an office in Riga in May 2027 and hire 60 engineers.", "open an office"),
    (
        "The Quanta Ledger card has no monthly fee and pays 1 percent cash back on supplier payments.",
        "no monthly fee",
    ),
]
WRONG = {
    "wrong number": (
        "Quanta Ledger reported revenue of 84 million euros for the first half of 2026, up 22 percent.",
        "reported revenue",
    ),
    "invented name": (
        "Chief executive Jonas Berg said small companies in Estonia and Latvia drove the growth.",
        "Marta Kask",
    ),
}
# Wrong in a way the classifier alone lets through (another city, the rest copied): only a judge catches it.
INVENTED_PLACE = ("Quanta Ledger will open an office in Vilnius in May 2027 and hire 60 engineers.", "open an office")


@pytest.fixture
def index(settings):
    return indexed_corpus(settings, COLLECTION, CORPUS)


def stubborn_writer(messages):
    """Every revision repeats the claim as it was, so a wrong claim fails each round."""
    return {"action": "revise", "sentence": data_block(messages, "claim"), "evidence": [1]}


def run(llm, model, vector_store, sentences, tmp_path, per_drafting_call=3.0):
    evidence = gather_evidence(vector_store, COLLECTION, TOPIC, 8)
    llm.scripts["DraftBrief"] = lambda messages: {
        "sentences": [
            {"text": text, "evidence": [next(n for n, s in evidence_items(messages) if cue in s)]}
            for text, cue in sentences
        ]
    }
    session = model.open_session()
    [(answer, trace)] = session.map_traced_structured(
        [draft_messages(TOPIC, evidence)], citing_within(len(evidence)), tier="strong"
    )
    drafts = claims_from_brief(TOPIC, evidence, answer, trace, 4)
    verifier = ClaimVerifier(vector_store, COLLECTION, llm=session)
    claims = [Claim(id=d.claim_id, text=d.text, cited_chunk_ids=d.cited_chunk_ids) for d in drafts]
    checks = fact_check_rows(drafts, check_sentences(verifier, claims, llm=session, decompose=True), "v1")
    split_calls = llm.calls_for("AtomicClaims")
    revisions = refine(
        drafts,
        checks,
        llm=session,
        verifier=verifier,
        rounds=2,
        decompose=True,
        max_calls=refinement_call_cap(drafts, per_drafting_call),
    )
    published, summaries = one_topic_summaries(TOPIC, checks, revisions, llm=session, verifier=verifier)
    return verifier, checks, split_calls, revisions, published, summaries


def test_fragments_and_a_misquoting_judge_neither_sink_correct_sentences_nor_pass_wrong_ones(llm, index, tmp_path):
    model, vector_store = index
    llm.scripts["AtomicClaims"] = splits_into_fragments
    llm.scripts["JudgeAnswer"] = quotes_support_as_contradiction
    llm.scripts["ClaimRevision"] = stubborn_writer
    verifier, checks, split_calls, revisions, published, summaries = run(
        llm, model, vector_store, [*CORRECT, *WRONG.values()], tmp_path
    )
    by_text = {c.claim: c for c in checks}

    # Every split was fragments, asked once more, then the sentence verified whole.
    assert split_calls == 2 * len(checks) == 12
    assert all(c.split_note.startswith("verified whole: the split was invalid twice") for c in checks)
    assert all(not c.atomic_claims for c in checks)

    # The judge measured itself on the sample first; it never answered anything but "refuted".
    calibration = verifier.judge_calibration()
    assert calibration.claims == 48 and calibration.mode in ("none", "refute")
    assert calibration.judge_accuracy == 0.5  # it never says supported: chance on a balanced sample
    metadata = judge_metadata(verifier)  # what fact_checks reports
    assert metadata["judge_accuracy"] == 0.5 and metadata["judge_mode"] == calibration.mode
    assert metadata["judge_classifier_accuracy"] == calibration.classifier_accuracy > 0.5

    # Correct sentences: the judge's "contradiction" quotes them, so it is discarded; they are supported.
    correct = [by_text[text] for text, _ in CORRECT]
    assert [c.verdict for c in correct] == ["supported"] * 4, [(c.claim, c.reason, c.judge_note) for c in correct]
    assert all(c.judge == "refuted" and "refutation is discarded" in c.judge_note for c in correct)
    # ...and they reach the summaries, the model's sentences as written.
    [summary] = summaries
    assert {text for text, _ in CORRECT} <= {s.text for s in summary.sentences}
    assert {c.text for c in published if c.origin == "model"} == {text for text, _ in CORRECT}
    # (a wrong claim's cited evidence sentence may stand in for it, verified like any claim)
    sources = " ".join(CORPUS.values())
    assert all(c.origin == "extractive" and c.text in sources for c in published if c.origin != "model")

    # Wrong sentences are still caught, refined (the writer repeats them) and never published.
    wrong = {kind: by_text[text] for kind, (text, _) in WRONG.items()}
    assert {k: c.verdict for k, c in wrong.items()} == {"wrong number": "refuted", "invented name": "refuted"}
    digest = render_digest(summaries)
    assert not any(text in digest or text in summary.summary for text, _ in WRONG.values())
    # Only they went to refinement: one draft allows 3 revision requests, so the second round was cut short.
    assert set(r.claim_id for r in revisions) == {c.claim_id for c in wrong.values()}
    # (a repeated request is answered from the response cache, so the server may see fewer)
    assert sum(r.action == "revise" for r in revisions) == 3 >= llm.calls_for("ClaimRevision")
    assert len([r for r in revisions if r.action == "capped"]) == 1
    assert Counter(c.verdict for c in checks) == {"supported": 4, "refuted": 2}


def test_a_judge_proven_on_the_sample_counts_and_catches_what_the_classifier_misses(llm, index, tmp_path):
    model, vector_store = index
    wrong = {INVENTED_PLACE[0], *(text for text, _ in WRONG.values())}

    def honest(messages):
        if claim_of(messages) in wrong:
            return {"verdict": "refuted", "quote": best_line(messages)}
        return {"verdict": "supported", "quote": best_line(messages)}

    llm.scripts["JudgeAnswer"] = knows_the_sample(honest)
    llm.scripts["ClaimRevision"] = stubborn_writer
    verifier, checks, _, _, published, _ = run(llm, model, vector_store, [*CORRECT, INVENTED_PLACE], tmp_path)
    calibration = verifier.judge_calibration()
    assert calibration.mode != "none" and calibration.judge_accuracy > calibration.classifier_accuracy
    by_text = {c.claim: c for c in checks}
    place = by_text[INVENTED_PLACE[0]]
    assert place.verdict == "refuted" and place.judge_counted, (place.reason, calibration)
    assert INVENTED_PLACE[0] not in {c.text for c in published}
    assert all(by_text[text].verdict == "supported" for text, _ in CORRECT)
    # Measured once per judge model: a second verifier reads the measurement from the cache.
    asked = llm.calls_for("JudgeAnswer")
    again = ClaimVerifier(vector_store, COLLECTION, llm=model.open_session())
    assert again.judge_calibration() == calibration and llm.calls_for("JudgeAnswer") == asked


def test_refinement_skips_fragments_stops_at_its_cap_and_drops_what_it_did_not_refine(llm, index, tmp_path):
    model, vector_store = index
    llm.scripts["ClaimRevision"] = stubborn_writer
    fragment = ("Quanta Ledger in 2026.", "launched the Quanta")
    _, checks, _, revisions, published, _ = run(
        llm, model, vector_store, [CORRECT[0], fragment, *WRONG.values()], tmp_path, per_drafting_call=1.0
    )
    by_text = {c.claim: c for c in checks}
    # A sentence that asserts nothing checkable is dropped, not sent to be reworded.
    assert not by_text[fragment[0]].refinable and "asserts nothing checkable" in by_text[fragment[0]].reason
    assert by_text[fragment[0]].claim_id not in {r.claim_id for r in revisions}
    # One draft, so one revision request in all: the first wrong claim's first round.
    assert llm.calls_for("ClaimRevision") == 1
    capped = {r.claim_id for r in revisions if r.action == "capped"}
    assert capped == {by_text[text].claim_id for text, _ in WRONG.values()}
    assert all("cap of 1" in r.reason for r in revisions if r.action == "capped")
    assert [c.text for c in published] == [CORRECT[0][0]]
