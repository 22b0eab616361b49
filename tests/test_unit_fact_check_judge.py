"""The rules that keep a weak model's answers from sinking correct sentences, as pure functions.

A split into fragments is not a split (the sentence is then verified whole); a "contradiction"
whose quote states the claim is no contradiction; a judge's answer counts only in the
configuration its measurement on the labelled sample showed to help; and refinement requests
are capped at a multiple of the drafting requests.
"""

from __future__ import annotations

import pytest

from assets.digest.draft_revisions import refinement_call_cap
from assets.digest.drafts import DraftClaim
from resources.embeddings import LOCAL_EMBEDDING_MODEL
from resources.verification.atomic_claims import proposition_problem, split_problem
from resources.verification.claim_features import quote_states_claim
from resources.verification.claim_verification import JudgeAnswer, read_judge
from resources.verification.fact_check_judge import (
    JUDGE_SAMPLE,
    SAMPLE_FEATURES,
    SampleFeatures,
    balanced_accuracy,
    choose_mode,
    features_version,
    load_sample,
    sample_hash,
)

pytestmark = pytest.mark.unit

SENTENCE = "Quanta Ledger launched the Quanta Business Card, a debit card for small companies, on 1 December 2026."
EVIDENCE = "On 1 December 2026 Quanta Ledger launched the Quanta Business Card, a debit card for small companies."


@pytest.mark.parametrize("fragment", ["The first half of 2026.", "May 2026", "Quanta Ledger", "a debit card"])
def test_a_fragment_is_not_a_proposition(fragment: str) -> None:
    assert "fragment" in proposition_problem(fragment)


@pytest.mark.parametrize(
    "proposition",
    ["Quanta Ledger is a company.", "Acme Robotics raised 40 million euros.", "Revenue rose 18 percent in 2026."],
)
def test_a_subject_and_a_predicate_make_a_proposition(proposition: str) -> None:
    assert proposition_problem(proposition) == ""


def test_a_split_must_be_propositions_that_cover_the_sentence() -> None:
    whole = [
        "Quanta Ledger launched the Quanta Business Card on 1 December 2026.",
        "The Quanta Business Card is a debit card for small companies.",
    ]
    assert split_problem(SENTENCE, whole) == ""
    fragments = split_problem(SENTENCE, ["Quanta Ledger", "1 December 2026", "a debit card for small companies"])
    assert "'Quanta Ledger' is a fragment" in fragments and "'1 December 2026' is a fragment" in fragments
    partial = split_problem(SENTENCE, ["Quanta Ledger launched a card."])
    assert "leave out words of the sentence" in partial and "debit" in partial
    assert split_problem(SENTENCE, []) == "no atomic claims"


def test_a_quote_that_states_the_claim_is_no_contradiction() -> None:
    assert quote_states_claim(SENTENCE, EVIDENCE)
    refuted = read_judge(SENTENCE, JudgeAnswer(verdict="refuted", quote=EVIDENCE), EVIDENCE)
    assert (refuted.value, refuted.verdict) == (0.0, "refuted") and "refutation is discarded" in refuted.note


@pytest.mark.parametrize(
    "wrong",
    [
        SENTENCE.replace("1 December", "3 December"),  # another number
        SENTENCE.replace("December", "November"),  # another month
        SENTENCE.replace("Quanta Ledger launched", "Helios Bank launched"),  # another name
        "Quanta Ledger did not launch the Quanta Business Card, a debit card for small companies, on 1 December 2026.",
    ],
)
def test_a_quote_that_differs_from_the_claim_still_refutes_it(wrong: str) -> None:
    assert not quote_states_claim(wrong, EVIDENCE)
    reading = read_judge(wrong, JudgeAnswer(verdict="refuted", quote=EVIDENCE), EVIDENCE)
    assert (reading.value, reading.note) == (-1.0, "")


def test_a_quote_must_hold_most_of_the_claims_words() -> None:
    assert not quote_states_claim(SENTENCE, "Quanta Ledger launched a card on 1 December 2026.")
    assert not quote_states_claim(SENTENCE, "")


def test_the_judge_counts_only_where_it_beats_the_classifier() -> None:
    gold = [True, True, True, True, False, False, False, False]
    classifier = [True, True, True, True, True, True, False, False]  # accepts two wrong claims
    everything = [True] * len(gold)
    # A judge whose verified refutations fall on the wrong claims: counted, for refutations only.
    refutes_wrong = [0, 0, 0, 0, -1, -1, 0, 0]
    mode, figures, reason = choose_mode(gold, classifier, refutes_wrong, everything)
    assert (mode, figures["none"], figures["refute"]) == ("refute", 0.75, 1.0) and "refute" in reason
    # A judge that refutes everything it reads (quoting the supporting sentence): never counted.
    mode, figures, reason = choose_mode(gold, classifier, [-1.0] * len(gold), everything)
    assert mode == "none" and figures["refute"] == 0.5 and reason.startswith("unproven")
    # A judge that gives no verified answer changes nothing, so it cannot beat the classifier.
    assert choose_mode(gold, classifier, [0.0] * len(gold), everything)[0] == "none"
    # A gain within the margin is noise: not counted.
    assert choose_mode(gold, classifier, [0, 0, 0, 0, -1, 0, 0, 0], everything, margin=0.2)[0] == "none"
    assert balanced_accuracy(gold, classifier) == 0.75


def test_a_judge_that_supports_cannot_raise_a_claim_whose_facts_the_evidence_lacks() -> None:
    gold = [True, True, False, False]
    classifier = [False, False, False, False]
    supports_all = [1.0, 1.0, 1.0, 1.0]
    mode, figures, _ = choose_mode(gold, classifier, supports_all, [True, True, False, False])
    assert mode == "support" and figures["support"] == 1.0


def test_the_calibration_sample_is_balanced_and_public() -> None:
    sample = load_sample()
    labels = [s.label for s in sample]
    assert 40 <= len(sample) <= 60 and labels.count("supported") == labels.count("unsupported")
    assert len({s.id for s in sample}) == len(sample)
    beside = {p.name for p in JUDGE_SAMPLE.parent.iterdir()}
    assert {"FRANK_LICENSE", "fact_check_judge_sample.md"} <= beside


def test_the_sample_features_ship_for_the_bundled_embedder_and_the_current_feature_code() -> None:
    """Otherwise every run that measures a judge embeds the sample again (correct, but slow)."""
    stored = SampleFeatures.model_validate_json(SAMPLE_FEATURES.read_text())
    assert stored.embedding_model == LOCAL_EMBEDDING_MODEL and len(stored.features) == len(load_sample())
    assert (stored.features_version, stored.sample_hash) == (features_version(), sample_hash()), (
        "rebuild: .venv/bin/python tests/data/factcheck/build_judge_sample.py"
    )


def _draft(draft_id: str, n: int) -> DraftClaim:
    return DraftClaim(
        claim_id=f"{draft_id}-{n}",
        draft_id=draft_id,
        topic="t",
        position=n,
        text="Acme Robotics raised 40 million euros.",
        cited_chunk_ids=[],
        evidence_numbers=[],
        evidence_sentence="",
        evidence_list=[],
        origin="model",
        trace_id="",
    )


def test_refinement_calls_are_capped_at_a_multiple_of_the_drafting_calls() -> None:
    drafts = [_draft("d1", 0), _draft("d1", 1), _draft("d2", 0)]
    assert refinement_call_cap(drafts, 3.0) == 6
    assert refinement_call_cap(drafts, 0.0) == 0
