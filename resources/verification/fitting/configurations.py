"""What cross-validation chooses among, and how one configuration is fitted.

A configuration is one classifier, or a gate with an expert per kind of summary sentence; its
features, L2 penalty and monotone constraint; fitted at its operating points, it is the
classifier the verifier ships.
"""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, Field

from resources.verification.claim_features import (
    BASE_FEATURE_NAMES,
    FACT_FEATURE_NAMES,
    FEATURE_NAMES,
    STRUCTURE_FEATURE_NAMES,
)
from resources.verification.claim_verification import Classifier
from resources.verification.fitting.classifier_fitting import fit_classifier, scaled
from resources.verification.fitting.labelled_sets import FIT_SETS
from resources.verification.fitting.objective import Figures, FitData

# Candidates offered to cross-validation. Nothing here is chosen by looking at a held-out set.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "base": BASE_FEATURE_NAMES,
    "base+facts": BASE_FEATURE_NAMES + FACT_FEATURE_NAMES,
    "base+structure": BASE_FEATURE_NAMES + STRUCTURE_FEATURE_NAMES,
    "all": FEATURE_NAMES,
}
# Style routes, content decides. The structure features measure how a sentence was written (word
# pairs and runs copied from the source): they tell a near-copy from a rewording, which is the
# gate's job, but as evidence of truth they only hold for summarizers whose errors come from
# recombining copied text. Fitted on them, the experts withheld correct paraphrases, which is what
# the pipeline's own model writes (FACT_CHECKING.md, version 5), so deciding classifiers see
# content features only.
DECISION_FEATURE_SETS = ("base", "base+facts")
L2_GRID = (1000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 1.0, 0.3, 0.1)
# The baseline's own score, max cosine to a source sentence, may only raise P(supported): with this
# constraint the classifier cannot learn to accept a sentence *because* it is far from the source.
MONOTONE_FEATURE = "sentence_similarity"
MONOTONE_CHOICES = (True, False)
# The gated family: a gate recognises which fit set's kind a sentence is of, and that kind's expert
# decides. The gate is fitted on which fit set each sentence came from (class-balanced, L2 1).
EXPERT_KINDS = ("extractive", "abstractive")  # the kinds of FIT_SETS, in order
GATE_FEATURE_SETS = ("base", "base+structure")
GATE_L2 = 1.0


class Choice(BaseModel):
    """One candidate configuration and its cross-validated figures on the public fit data."""

    family: str = Field(default="single", description="single: one classifier; gated: a gate and an expert per kind.")
    gate_features: str = ""
    feature_set: str
    l2: float
    monotone: bool
    thresholds: list[float] = Field(default_factory=list, description="Per expert: the operating point.")
    cv: float = Field(
        default=0.0, description="Out-of-fold balanced accuracy at `threshold`, mean over the fit datasets."
    )
    cv_per_dataset: dict[str, float] = Field(default_factory=dict)
    cv_unsupported_recall: float = Field(default=0.0, description="The lowest over the fit datasets.")


def candidates() -> list[Choice]:
    """Every configuration offered to cross-validation, simplest first (ties go to the earlier)."""
    out = [
        Choice(family="single", feature_set=name, l2=l2, monotone=monotone)
        for name in DECISION_FEATURE_SETS
        for l2 in L2_GRID
        for monotone in MONOTONE_CHOICES
    ]
    if len(FIT_SETS) == 2:
        out += [
            Choice(family="gated", gate_features=gate, feature_set=name, l2=l2, monotone=monotone)
            for gate in GATE_FEATURE_SETS
            for name in DECISION_FEATURE_SETS
            for l2 in L2_GRID
            for monotone in MONOTONE_CHOICES
        ]
    return out


def fit_on(
    data: FitData,
    features: Sequence[str],
    l2: float,
    monotone: bool,
    index: Sequence[int] | None = None,
    fallback: Sequence[int] | None = None,
) -> Classifier:
    """One configuration fitted on `index` of the data (all of it by default); on `fallback` when
    `index` holds one label or none (an expert of a tiny sample), since nothing can be fitted there."""
    index = range(len(data.gold)) if index is None else index
    if fallback is not None and len({data.gold[i] for i in index}) < 2:
        index = fallback
    weights = data.weights()
    return fit_classifier(
        [data.rows[i] for i in index],
        [data.gold[i] for i in index],
        features,
        l2=l2,
        weights=[weights[i] for i in index],
        nonnegative=(MONOTONE_FEATURE,) if monotone and MONOTONE_FEATURE in features else (),
        balanced=False,
    )


def fit_gate(data: FitData, features: Sequence[str], index: Sequence[int]) -> Classifier:
    """P(a sentence is of the second fit set's kind), from its features alone: the runtime never
    knows which benchmark a sentence resembles, so the gate has to see it."""
    second = FIT_SETS[-1]
    index = [i for i in index if data.public(data.dataset_of(i))]
    return fit_classifier(
        [data.rows[i] for i in index], [data.dataset_of(i) == second for i in index], features, l2=GATE_L2
    )


def kind_of(data: FitData, index: int, gate: Classifier) -> int:
    """The expert a fit example trains: the position of its fit set; a dev claim, where the gate sends it."""
    if data.dataset_of(index) in FIT_SETS:
        return FIT_SETS.index(data.dataset_of(index))
    return int(gate.probability(data.rows[index]) >= gate.threshold)


def fit_gated(data: FitData, choice: Choice, index: Sequence[int]) -> tuple[Classifier, list[Classifier]]:
    """The gate and one expert per kind, fitted on `index`; an expert whose share holds one label
    (a tiny sample) is fitted on all of `index` instead."""
    gate = fit_gate(data, FEATURE_SETS[choice.gate_features], index)
    experts = [
        fit_on(
            data,
            FEATURE_SETS[choice.feature_set],
            choice.l2,
            choice.monotone,
            [i for i in index if kind_of(data, i, gate) == k],
            fallback=index,
        )
        for k in range(len(FIT_SETS))
    ]
    return gate, experts


class OperatingPoint(BaseModel):
    """Where each expert says "supported", and the Platt scaling that makes its output a probability."""

    thresholds: list[float]
    cv: Figures
    platt_slopes: list[float] = Field(default_factory=lambda: [1.0])
    platt_intercepts: list[float] = Field(default_factory=lambda: [0.0])


def fit_choice(data: FitData, choice: Choice, point: OperatingPoint) -> Classifier:
    """The chosen configuration fitted on all the fit data, at its operating point."""
    features = FEATURE_SETS[choice.feature_set]
    if choice.family != "gated":
        single = fit_on(data, features, choice.l2, choice.monotone)
        return scaled(single, point.platt_slopes[0], point.platt_intercepts[0], point.thresholds[0])
    gate, fitted = fit_gated(data, choice, range(len(data.gold)))
    experts = [
        scaled(expert, point.platt_slopes[k], point.platt_intercepts[k], point.thresholds[k]).model_copy(
            update={"kind": EXPERT_KINDS[k]}
        )
        for k, expert in enumerate(fitted)
    ]
    used = list(dict.fromkeys([*gate.features, *features]))
    return Classifier(features=used, gate=gate, experts=experts)
