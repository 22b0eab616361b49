"""The name rule, as pure functions: a claim whose name the evidence does not hold is not supported.

A sentence that copies its evidence but swaps in an invented person reads as supported to every
similarity feature; the rule refuses it whatever the classifier or a judge says, and names the
missing name in the reason. The forms a real name takes in a rewording (a possessive, a surname
alone, another case or hyphenation, an acronym) must not trip it, and neither must the
capitalised word that opens a sentence.
"""

from __future__ import annotations

import numpy as np
import pytest

from resources.verification.claim_features import NAMES_MISSING, Passage, candidates_of, claim_features
from resources.verification.claim_names import missing_names, names_in
from resources.verification.claim_verification import (
    Calibration,
    Classifier,
    JudgeReading,
    apply_judge,
    decide,
    is_supported,
    missing_facts,
)

pytestmark = pytest.mark.unit

EVIDENCE = (
    "Quanta Ledger launched the Quanta Business Card on 1 December 2026. "
    "Chief executive Maria Lind said the European Central Bank's rate decision did not affect the launch."
)
# P(supported) = sigmoid(similarity); every claim below sits at similarity 1 (about 0.73).
BY_SIMILARITY = Classifier(features=["similarity"], mean=[0.0], scale=[1.0], weights=[1.0], bias=0.0)


def verdict_of(claim: str, evidence: str = EVIDENCE):
    """The verifier's decision with the claim as close as can be to every candidate in embedding space."""
    candidates = candidates_of([Passage(chunk_id="c-1", text=evidence)])
    vectors = np.ones((len(candidates), 1), dtype=np.float32)
    features = claim_features(claim, np.ones(1, dtype=np.float32), candidates, vectors)
    return features, decide("c", features, Calibration(classifier=BY_SIMILARITY))


def test_an_invented_name_is_refused_and_the_reason_names_it() -> None:
    features, verdict = verdict_of(
        "Quanta Ledger chief executive Jonas Lind said the rate decision did not affect the launch."
    )
    assert features.missing_names == ["Jonas Lind"] and features.values[NAMES_MISSING] == 1.0
    assert verdict.verdict != "supported" and verdict.score > 0.5
    assert verdict.reason.endswith("the evidence does not contain the claim's name 'Jonas Lind'")


def test_the_same_claim_with_the_evidence_s_name_is_supported() -> None:
    _, verdict = verdict_of(
        "Quanta Ledger chief executive Maria Lind said the rate decision did not affect the launch."
    )
    assert (verdict.verdict, verdict.reason) == ("supported", "")


@pytest.mark.parametrize(
    "claim",
    [
        "Lind's company launched the Quanta Business Card on 1 December 2026.",  # possessive, surname alone
        "Chief executive Lind said the ECB's decision did not affect the launch.",  # acronym of the evidence's name
        "The card of QUANTA-LEDGER was launched on 1 December 2026.",  # case and hyphenation
        "Launched on 1 December 2026, the card is Quanta Ledger's.",  # sentence-initial capitalised word
    ],
)
def test_a_name_the_evidence_holds_in_another_form_passes(claim: str) -> None:
    features, verdict = verdict_of(claim)
    assert features.missing_names == [] and verdict.verdict == "supported", verdict.reason


def test_a_name_anywhere_in_the_retrieved_evidence_holds_not_only_in_the_best_sentence() -> None:
    evidence = "Douglas Bader lost his legs in a flying accident in 1931. Bader was shot down over France in 1941."
    features, verdict = verdict_of("Douglas Bader was shot down over France in 1941.", evidence)
    assert features.missing_names == [] and verdict.verdict == "supported"
    features, verdict = verdict_of("Douglas Bahr was shot down over France in 1941.", evidence)
    assert features.missing_names == ["Douglas Bahr"] and verdict.verdict != "supported"


def test_a_sentence_initial_word_alone_is_not_a_name_but_a_run_of_capitals_is() -> None:
    assert names_in("Revenue rose in March, analysts said.") == []
    assert [n.text for n in names_in("Despite the outage, Jonas Berg said Monday's launch held.")] == ["Jonas Berg"]
    assert [n.text for n in names_in("Jonas Berg said so. Shares of Quanta fell.")] == ["Jonas Berg", "Quanta"]
    assert [n.text for n in names_in('"Growth is back," said Mr Berg of the Bank of England.')] == [
        "Berg",
        "Bank of England",
    ]


def test_names_are_looked_up_in_the_evidence_window_and_acronyms_either_way() -> None:
    assert missing_names("The ECB held rates.", "The European Central Bank held rates.") == []
    assert missing_names("The European Central Bank held rates.", "The ECB held rates.") == []
    assert missing_names("The EIB held rates.", "The European Central Bank held rates.") == ["EIB"]
    assert missing_names("Maria Lind met Jonas Berg.", "Lind met Anna Berg.") == ["Maria Lind", "Jonas Berg"]
    # An all-lower-case claim has no capitals: its names are the words the context capitalises.
    assert missing_names("lind met berg in tartu", "Lind met Berg.", "Lind met Berg. The plant is in Tartu.") == [
        "tartu"
    ]


def test_the_name_rule_holds_whatever_the_classifier_or_a_judge_says() -> None:
    assert missing_facts({NAMES_MISSING: 1.0}) == ["name"]
    assert not is_supported(BY_SIMILARITY, {"similarity": 50.0, NAMES_MISSING: 1.0})
    features, rejected = verdict_of("Chief executive Jonas Lind said the rate decision did not affect the launch.")
    supports = JudgeReading(value=1.0, verdict="supported", quote="Chief executive Maria Lind said")
    judged = apply_judge(rejected, features, supports, "overrule")
    assert judged.verdict != "supported" and "the judge's support is overruled: no name" in judged.reason
