"""A calibration fitted on the public fit sets and measured once on every held-out set.

The steps in order: the fit data (public claims by article, our dev claims by source document),
the configuration chosen by cross-validation, its operating points and Platt scaling, the
classifier fitted on all the fit data, the one-feature baseline fitted by the same rule, the
figures per held-out set, and with a judge, the judge's weight and whether it helps.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from resources import ModelResource
from resources.verification.claim_features import REFUTE_FEATURE_NAMES
from resources.verification.claim_verification import Calibration, is_supported, model_fingerprint
from resources.verification.fitting.calibration_report import CalibrationReport
from resources.verification.fitting.classifier_fitting import fit_classifier
from resources.verification.fitting.configurations import Choice, OperatingPoint, fit_choice
from resources.verification.fitting.cross_validation import operating_point, select_model
from resources.verification.fitting.judge_fit import judge_figures
from resources.verification.fitting.labelled_sets import DEV_DATASET, FIT_SETS, HELDOUT_SETS
from resources.verification.fitting.measurement import dev_figures, measure
from resources.verification.fitting.objective import FitData, figures, prefer
from resources.verification.fitting.scoring import DevClaim, Scored, labelled


def fit_data(scored: dict[str, list[Scored]], dev_claims: Sequence[DevClaim] = ()) -> FitData:
    """The labelled claims of every fit set, grouped by article (within its dataset), and our dev
    claims grouped by source document (weight 1 each; outside the objective)."""
    items = [(name, s) for name in FIT_SETS for s in labelled(scored[name])]
    return FitData(
        rows=[s.features.values for _, s in items] + [d.features.values for d in dev_claims],
        gold=[s.supported for _, s in items] + [d.label == "supported" for d in dev_claims],
        groups=[f"{name}:{s.article_id}" for name, s in items] + [f"{DEV_DATASET}:{d.source}" for d in dev_claims],
        datasets=[name for name, _ in items] + [DEV_DATASET] * len(dev_claims),
    )


def fit_baseline(data: FitData, scored: dict[str, list[Scored]]) -> float:
    """The one-feature baseline's threshold, fitted on the same public data by the same rule as the verifier."""
    baseline = [s.baseline for name in FIT_SETS for s in labelled(scored[name])]
    public = data.subset(range(len(baseline)))  # `fit_data` puts the public claims first, in this order
    cuts = sorted(set(baseline))
    candidates = [(a + b) / 2 for a, b in zip(cuts, cuts[1:])] or [0.5]
    return prefer([(figures(public, [b >= cut for b in baseline]), cut) for cut in candidates])


def fit_calibration(
    data: FitData,
    dev_claims: Sequence[DevClaim],
    choice: Choice,
    point: OperatingPoint,
    fingerprint: str,
    dev_set: str = "",
) -> Calibration:
    """The shipped classifier, fitted on all the public fit data with the chosen configuration and
    operating point; the refuted-vs-not-enough-info classifier (from the dev set's three labels:
    it only names the kind of a rejection, never lets a claim through). `dev_set` names the dev
    claims' file in the record of what was fitted on."""
    classifier = fit_choice(data, choice, point)
    rejected = [d for d in dev_claims if d.label != "supported"]
    refute_classifier = (
        fit_classifier(
            [d.features.values for d in rejected], [d.label == "refuted" for d in rejected], REFUTE_FEATURE_NAMES
        )
        if {d.label for d in rejected} == {"refuted", "not_enough_info"}
        else None
    )
    calibration = Calibration(
        fingerprint=fingerprint,
        classifier=classifier,
        refute_classifier=refute_classifier,
        fit_set=" + ".join(FIT_SETS) + (f" + {dev_set} (weight 1 a claim)" if dev_claims else ""),
        examples=len(data.rows),
    )
    fitted = figures(data, [is_supported(classifier, r) for r in data.rows])
    calibration.fitted = {
        "cv_balanced_accuracy": round(point.cv.objective, 3),
        **{f"cv_balanced_accuracy_{k}": round(v, 3) for k, v in point.cv.per_dataset.items()},
        "cv_unsupported_recall": round(point.cv.unsupported_recall, 3),
        **{f"cv_unsupported_recall_{k}": round(v, 3) for k, v in point.cv.unsupported_recall_per_dataset.items()},
        "l2": choice.l2,
        "monotone": float(choice.monotone),
        "fit_balanced_accuracy": round(fitted.objective, 3),
    }
    return calibration


def fit_and_measure(
    scored: dict[str, list[Scored]],
    dev_claims: Sequence[DevClaim],
    embedding_model: str,
    *,
    previous: Calibration | None = None,
    judge_model: ModelResource | None = None,
    judge_claims: int = 12,
    dev_set: str = "",
    say: Callable[[str], None] = lambda message: None,
    started: float | None = None,
) -> CalibrationReport:
    """Fit on the public fit sets, choosing features, regularisation, the monotone constraint and
    the operating point by grouped cross-validation on that data alone; then measure every
    held-out set once, beside the baseline and `previous` (the calibration the fit replaces), and
    with `judge_model`, the verifier with the judge on a sample of each. `scored` holds every fit
    and held-out set; `started` is when the run began (its scoring included), for the report."""
    started = time.monotonic() if started is None else started
    data = fit_data(scored, dev_claims)
    choice, tried = select_model(data)
    say(f"model selection: {len(tried)} configurations cross-validated on the fit sets")
    point = operating_point(data, choice)
    calibration = fit_calibration(data, dev_claims, choice, point, model_fingerprint(embedding_model), dev_set)
    assert calibration.classifier is not None
    classifier = calibration.classifier
    threshold = fit_baseline(data, scored)
    sets = [measure(name, scored[name], classifier, previous, threshold) for name in HELDOUT_SETS]
    calibration.heldout = {s.name: round(s.verifier, 3) for s in sets}
    judge_calibration = None
    if judge_model is not None:
        judge_calibration = judge_figures(
            scored, sets, classifier, calibration.refute_classifier, judge_model, judge_claims, embedding_model, say
        )
    dev_report = dev_figures(dev_claims, calibration, previous)
    if dev_report is not None and DEV_DATASET in point.cv.per_dataset:
        dev_report.cross_validated = round(point.cv.per_dataset[DEV_DATASET], 3)
        dev_report.cross_validated_unsupported_recall = round(point.cv.unsupported_recall_per_dataset[DEV_DATASET], 3)
    if dev_report is not None:  # measured, not fitted on: what `ai-pipelines` checks its own runs against
        calibration.fitted["dev_accuracy_3_labels"] = dev_report.accuracy_3_labels
        calibration.fitted["dev_balanced_accuracy"] = dev_report.balanced_accuracy
    return CalibrationReport(
        fingerprint=calibration.fingerprint,
        baseline_threshold=round(threshold, 4),
        choice=choice,
        operating_point=point,
        calibration=calibration,
        judge_calibration=judge_calibration,
        sets=sets,
        dev=dev_report,
        seconds=round(time.monotonic() - started, 1),
    )
