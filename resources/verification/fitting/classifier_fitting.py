"""How a classifier is fitted: L2-regularised logistic regression, the judge stacked on it, Platt scaling.

Every fitted model here is a `Classifier` of the verification library, so what is fitted is
exactly what the verifier runs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from resources.verification.claim_features import JUDGE_FEATURE
from resources.verification.claim_verification import Classifier, is_supported


def fit_classifier(
    rows: Sequence[dict[str, float]],
    gold: Sequence[bool],
    features: Sequence[str],
    l2: float = 1.0,
    weights: Sequence[float] | None = None,
    nonnegative: Sequence[str] = (),
    balanced: bool = True,
) -> Classifier:
    """L2-regularised logistic regression by Newton's method, classes weighted to equal total weight
    (unless not `balanced`). A feature in `nonnegative` whose fitted weight comes out negative is
    held at 0 and the rest refitted: the constraint is active only where the data push against it."""
    fitted = _newton(rows, gold, features, l2, weights, balanced)
    negative = [f for f, w in zip(fitted.features, fitted.weights) if f in nonnegative and w < 0]
    if not negative:
        return fitted
    rest = [f for f in features if f not in negative]
    refitted = _newton(rows, gold, rest, l2, weights, balanced)
    by_name = dict(zip(rest, zip(refitted.mean, refitted.scale, refitted.weights)))
    held = {f: (m, s, 0.0) for f, m, s in zip(fitted.features, fitted.mean, fitted.scale) if f in negative}
    columns = [by_name.get(f) or held[f] for f in features]
    return Classifier(
        features=list(features),
        mean=[c[0] for c in columns],
        scale=[c[1] for c in columns],
        weights=[c[2] for c in columns],
        bias=refitted.bias,
    )


def _newton(
    rows: Sequence[dict[str, float]],
    gold: Sequence[bool],
    features: Sequence[str],
    l2: float,
    weights: Sequence[float] | None,
    balanced: bool,
) -> Classifier:
    x_raw = np.array([[r.get(f, 0.0) for f in features] for r in rows], dtype=float).reshape(len(rows), len(features))
    y = np.array(gold, dtype=float)
    mean, scale = x_raw.mean(axis=0), x_raw.std(axis=0)
    scale = np.where(scale < 1e-9, 1.0, scale)
    x = np.hstack([(x_raw - mean) / scale, np.ones((len(y), 1))])
    positives = max(y.sum(), 1.0)
    negatives = max(len(y) - y.sum(), 1.0)
    sample_weight = (
        np.where(y == 1, len(y) / (2 * positives), len(y) / (2 * negatives)) if balanced else np.ones(len(y))
    )
    if weights is not None:
        sample_weight = sample_weight * np.asarray(weights, dtype=float)
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (sample_weight * (p - y)) + penalty * w
        hessian = (x * (sample_weight * p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Classifier(
        features=list(features), mean=mean.tolist(), scale=scale.tolist(), weights=w[:-1].tolist(), bias=float(w[-1])
    )


def stack_judge(
    classifier: Classifier, rows: Sequence[dict[str, float]], gold: Sequence[bool], l2: float = 1.0
) -> Classifier:
    """The verifier plus the judge: a logistic regression over (the verifier's log-odds, judge), folded
    back into one classifier over the verifier's features and `judge`. Only two weights and a bias are fitted, so a small
    judged sample is enough; a judge that never gives a verified answer gets weight 0.

    Its threshold is where the verifier's operating point lands when the judge gives no verified
    answer, so a silent judge decides exactly as the verifier alone: a refit on a small sample would
    otherwise move the operating point, and "verifier + judge against verifier alone" would measure
    that move instead of the judge. A fit that turns the verifier's own score around (a tiny or
    one-sided sample) keeps the verifier as it is, with the judge at weight 0."""
    if classifier.experts:  # each kind's expert takes the judge on the claims routed to it
        experts = []
        for expert in classifier.experts:
            mine = [i for i, r in enumerate(rows) if classifier.expert_for(r) is expert]
            one_sided = len({gold[i] for i in mine}) < 2
            experts.append(
                _silent_judge(expert)
                if one_sided
                else stack_judge(expert, [rows[i] for i in mine], [gold[i] for i in mine], l2)
            )
        return classifier.model_copy(update={"experts": experts, "features": [*classifier.features, JUDGE_FEATURE]})
    logits = [logit(classifier.probability(r)) for r in rows]
    stacked = fit_classifier(
        [{"verifier": z, JUDGE_FEATURE: r.get(JUDGE_FEATURE, 0.0)} for z, r in zip(logits, rows)],
        gold,
        ("verifier", JUDGE_FEATURE),
        l2=l2,
    )
    (a, b), (mean_z, mean_j), (scale_z, scale_j) = stacked.weights, stacked.mean, stacked.scale
    slope = a / scale_z
    if slope <= 0:
        return _silent_judge(classifier)
    silent = slope * (logit(classifier.threshold) - mean_z) + b * (0.0 - mean_j) / scale_j + stacked.bias
    return Classifier(
        features=[*classifier.features, JUDGE_FEATURE],
        mean=[*classifier.mean, mean_j],
        scale=[*classifier.scale, scale_j],
        weights=[*(slope * w for w in classifier.weights), b],
        bias=slope * (classifier.bias - mean_z) + stacked.bias,
        threshold=float(1 / (1 + np.exp(-silent))),
    )


def _silent_judge(classifier: Classifier) -> Classifier:
    """The classifier as it is, with the judge as a feature of weight 0."""
    return classifier.model_copy(
        update={
            "features": [*classifier.features, JUDGE_FEATURE],
            "mean": [*classifier.mean, 0.0],
            "scale": [*classifier.scale, 1.0],
            "weights": [*classifier.weights, 0.0],
        }
    )


def logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(np.log(p / (1 - p)))


def predict(classifier: Classifier, rows: Sequence[dict[str, float]]) -> list[bool]:
    return [is_supported(classifier, r) for r in rows]


def scaled(classifier: Classifier, slope: float, intercept: float, threshold: float) -> Classifier:
    """The classifier with Platt's scaling folded into its weights (logit' = a * logit + b), and the
    threshold moved with it, so decisions are unchanged and the probability is calibrated."""
    return classifier.model_copy(
        update={
            "weights": [slope * w for w in classifier.weights],
            "bias": slope * classifier.bias + intercept,
            "threshold": float(1 / (1 + np.exp(-(slope * logit(threshold) + intercept)))),
        }
    )
