"""Model selection by cross-validation grouped by article, on the public fit data alone.

Every candidate configuration is scored out of fold (no model sees the article of a sentence
it scores), at its own best operating points; the best by the objective's rule is chosen, and
Platt scaling is fitted on its out-of-fold scores.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel

from resources.verification.claim_verification import missing_facts
from resources.verification.fitting.classifier_fitting import fit_classifier, logit
from resources.verification.fitting.configurations import (
    FEATURE_SETS,
    Choice,
    OperatingPoint,
    candidates,
    fit_gated,
    fit_on,
)
from resources.verification.fitting.labelled_sets import FIT_SETS
from resources.verification.fitting.objective import RECALL_FLOOR, TIE, Figures, FitData, prefer

CV_FOLDS = 5
CV_REPEATS = 3
THRESHOLDS = tuple(round(0.2 + 0.01 * i, 2) for i in range(61))


def grouped_folds(groups: Sequence[str], folds: int, seed: int) -> list[int]:
    """A fold per example; every group (an article, a source document) falls wholly in one fold."""
    unique = sorted(set(groups))
    np.random.default_rng(seed).shuffle(unique)
    fold_of = {g: i % folds for i, g in enumerate(unique)}
    return [fold_of[g] for g in groups]


class OutOfFold(BaseModel):
    """Per repeat of the grouped cross-validation: every example's P(supported) and the expert it went to."""

    probabilities: list[list[float]]
    routes: list[list[int]]


def out_of_fold(data: FitData, choice: Choice) -> OutOfFold:
    """P(supported) of every example from a model that never saw its article, once per repeat; with
    the gated family, the gate of that fold routes the example and the routed expert scores it."""
    features = FEATURE_SETS[choice.feature_set]
    folds = min(CV_FOLDS, len(set(data.groups)))
    gated = choice.family == "gated"
    probabilities, routes = [], []
    for repeat in range(CV_REPEATS):
        assignment = grouped_folds(data.groups, folds, repeat)
        p, route = [0.0] * len(data.gold), [0] * len(data.gold)
        for fold in range(folds):
            train = [i for i, f in enumerate(assignment) if f != fold]
            test = [i for i, f in enumerate(assignment) if f == fold]
            if gated:
                gate, experts = fit_gated(data, choice, train)
                for i in test:
                    route[i] = int(gate.probability(data.rows[i]) >= gate.threshold)
                    p[i] = experts[route[i]].probability(data.rows[i])
            else:
                single = fit_on(data, features, choice.l2, choice.monotone, train)
                for i in test:
                    p[i] = single.probability(data.rows[i])
        probabilities.append(p)
        routes.append(route)
    return OutOfFold(probabilities=probabilities, routes=routes)


def best_thresholds(data: FitData, scores: OutOfFold, experts: int) -> tuple[list[float], Figures]:
    """One operating point per expert, among `THRESHOLDS`, picked by `prefer`'s rule over every
    combination at once: counts per threshold are summed across experts, so the search is a table
    lookup rather than a refit."""
    gold = np.asarray(data.gold, dtype=bool)
    names = sorted(set(data.datasets) or {""})
    dataset = np.asarray([names.index(data.dataset_of(i)) for i in range(len(gold))])
    blocked = np.asarray([bool(missing_facts(r)) for r in data.rows])
    grid = np.asarray(THRESHOLDS)
    shape = (len(grid),) * experts
    recalls, accuracies, pooled = [], [], []
    for p, route in zip(scores.probabilities, scores.routes):
        p, route = np.asarray(p), np.asarray(route)
        total = np.zeros(
            (*shape, len(names), 4)
        )  # accepted supported, rejected supported, rejected unsupported, accepted unsupported
        for e in range(experts):
            mine = route == e
            accepted = (p[None, :] >= grid[:, None]) & ~blocked[None, :] & mine[None, :]
            cells = np.zeros((len(grid), len(names), 4))
            for d in range(len(names)):
                here = mine & (dataset == d)
                cells[:, d, 0] = (accepted & (here & gold)[None, :]).sum(1)
                cells[:, d, 1] = (here & gold).sum() - cells[:, d, 0]
                cells[:, d, 3] = (accepted & (here & ~gold)[None, :]).sum(1)
                cells[:, d, 2] = (here & ~gold).sum() - cells[:, d, 3]
            total = total + cells.reshape(tuple(len(grid) if a == e else 1 for a in range(experts)) + cells.shape[1:])
        positives, negatives = total[..., 0] + total[..., 1], total[..., 2] + total[..., 3]
        supported_recall = np.where(positives > 0, total[..., 0] / np.maximum(positives, 1), np.nan)
        unsupported_recall = np.where(negatives > 0, total[..., 2] / np.maximum(negatives, 1), np.nan)
        accuracies.append(np.nanmean(np.stack([supported_recall, unsupported_recall]), axis=0))
        recalls.append(np.where(negatives > 0, unsupported_recall, 1.0))
        kept = [d for d, n in enumerate(names) if data.public(n)]
        pooled.append(total[..., kept, 2].sum(-1) / np.maximum(negatives[..., kept].sum(-1), 1))
    accuracy, recall = np.mean(accuracies, axis=0), np.mean(recalls, axis=0)
    public = [d for d, n in enumerate(names) if data.public(n)]
    objective, floor = accuracy[..., public].mean(-1), recall[..., public].min(-1)
    eligible = floor >= RECALL_FLOOR
    if not eligible.any():
        eligible = floor >= floor.max() - TIE
    best = objective[eligible].max()
    close = eligible & (objective >= best - TIE)
    pick = np.unravel_index(int(np.argmax(np.where(close, floor, -1.0))), shape)
    figures_at = Figures(
        objective=float(objective[pick]),
        per_dataset={n: float(accuracy[pick][d]) for d, n in enumerate(names)},
        unsupported_recall=float(np.mean(pooled, axis=0)[pick]),
        unsupported_recall_per_dataset={n: float(recall[pick][d]) for d, n in enumerate(names)},
        public=[names[d] for d in public],
    )
    return [float(grid[j]) for j in pick], figures_at


def select_model(data: FitData) -> tuple[Choice, list[Choice]]:
    """The configuration whose own operating points (`best_thresholds`) are best by `prefer`; ties
    go to the simpler family, fewer features and stronger regularisation (the order of
    `candidates`). About a minute: every fit is a small Newton solve."""
    tried: list[Choice] = []
    scored: list[tuple[Figures, Choice]] = []
    if len(set(data.groups)) < 2:  # a one-article sample: nothing to cross-validate, take the first candidate
        return candidates()[0].model_copy(update={"cv": float("nan")}), tried
    for choice in candidates():
        if choice.family == "gated" and len(set(data.datasets)) < 2:
            continue
        experts = len(FIT_SETS) if choice.family == "gated" else 1
        thresholds, result = best_thresholds(data, out_of_fold(data, choice), experts)
        choice = choice.model_copy(
            update={
                "thresholds": thresholds,
                "cv": round(result.objective, 4),
                "cv_per_dataset": {k: round(v, 4) for k, v in result.per_dataset.items()},
                "cv_unsupported_recall": round(result.floor_recall, 4),
            }
        )
        tried.append(choice)
        scored.append((result, choice))
    return prefer(scored), tried


def operating_point(data: FitData, choice: Choice) -> OperatingPoint:
    """The thresholds on out-of-fold probabilities by `prefer`'s rule, and per expert a Platt scaling
    fitted on its out-of-fold scores without weights, so the shipped probability is the share of
    such sentences that are supported in the public fit data."""
    experts = len(FIT_SETS) if choice.family == "gated" else 1
    scores = out_of_fold(data, choice)
    thresholds, cv = best_thresholds(data, scores, experts)
    slopes, intercepts = [], []
    for e in range(experts):
        mine = [i for i, r in enumerate(scores.routes[0]) if r == e and data.public(data.dataset_of(i))]
        gold = [data.gold[i] for i in mine]
        if len(set(gold)) < 2 or len(set(data.groups)) < 2:
            slopes.append(1.0)
            intercepts.append(0.0)
            continue
        platt = fit_classifier(
            [{"z": logit(scores.probabilities[0][i])} for i in mine], gold, ("z",), l2=1e-6, balanced=False
        )
        slope = platt.weights[0] / platt.scale[0]
        slopes.append(slope)
        intercepts.append(platt.bias - slope * platt.mean[0])
    return OperatingPoint(thresholds=thresholds, cv=cv, platt_slopes=slopes, platt_intercepts=intercepts)
