"""A fitted verifier measured on labelled claims it was not fitted on, beside the baseline and the verifier it replaced.

Per claim (balanced accuracy, recall on unsupported sentences) and per summary (accepted when
every one of its sentences is).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

from resources.verification.claim_verification import Calibration, Classifier, decide, is_supported
from resources.verification.fact_check_judge import balanced_accuracy
from resources.verification.fitting.calibration_report import DevFigures, SetFigures
from resources.verification.fitting.labelled_sets import LOOKED_AT_BEFORE, UNSEEN_SETS
from resources.verification.fitting.scoring import DevClaim, Scored, labelled


def measure(
    name: str,
    items: Sequence[Scored],
    classifier: Classifier,
    previous: Calibration | None,
    threshold: float,
) -> SetFigures:
    """Balanced accuracy of each decision rule on one held-out set, per sentence and per summary."""
    claims = labelled(items)
    gold = [s.supported for s in claims]

    def score(decide_claim: Callable[[Scored], bool]) -> float:
        return round(balanced_accuracy(gold, [decide_claim(s) for s in claims]), 3)

    def recall(decide_claim: Callable[[Scored], bool]) -> float:
        wrong = [s for s in claims if not s.supported]
        return round(sum(not decide_claim(s) for s in wrong) / max(len(wrong), 1), 3)

    def shipped(s: Scored) -> bool:
        return is_supported(classifier, s.features.values)

    def baseline(s: Scored) -> bool:
        return s.baseline >= threshold

    replaced = previous.classifier if previous else None

    def before(s: Scored) -> bool:
        assert replaced is not None
        return is_supported(replaced, s.features.values)

    return SetFigures(
        name=name,
        claims=len(claims),
        supported=sum(gold),
        baseline=score(baseline),
        baseline_unsupported_recall=recall(baseline),
        verifier=score(shipped),
        unsupported_recall=recall(shipped),
        previous=score(before) if replaced else None,
        summaries=summary_level(items, shipped)[0],
        summaries_supported=summary_level(items, shipped)[1],
        summary_baseline=round(summary_level(items, baseline)[2], 3),
        summary_verifier=round(summary_level(items, shipped)[2], 3),
        summary_previous=round(summary_level(items, before)[2], 3) if replaced else None,
        looked_at_before=name in LOOKED_AT_BEFORE,
        unseen=name in UNSEEN_SETS,
    )


def summary_level(scored: Sequence[Scored], decide_claim: Callable[[Scored], bool]) -> tuple[int, int, float]:
    """A summary is accepted when every one of its sentences is; its label is FRANK's Factuality == 1.
    Returns (summaries, fully factual ones, balanced accuracy)."""
    groups: dict[tuple[str, str], list[Scored]] = defaultdict(list)
    for item in scored:
        groups[(item.article_id, item.summarizer)].append(item)
    gold, predicted = [], []
    for items in groups.values():
        factuality = items[0].summary_factuality
        gold.append(factuality == 1.0 if factuality is not None else all(s.supported for s in items))
        predicted.append(all(decide_claim(s) for s in items))
    return len(gold), sum(gold), balanced_accuracy(gold, predicted)


def dev_figures(
    dev_claims: Sequence[DevClaim], calibration: Calibration, previous: Calibration | None
) -> DevFigures | None:
    """The shipped verifier (and the one it replaced) on our paraphrased dev claims: reported, never fitted on."""
    if not dev_claims:
        return None
    gold = [d.label == "supported" for d in dev_claims]
    verdicts = [decide(str(i), d.features, calibration).verdict for i, d in enumerate(dev_claims)]
    predicted = [v == "supported" for v in verdicts]
    wrong = [i for i, g in enumerate(gold) if not g]
    previous_predicted = (
        [is_supported(previous.classifier, d.features.values) for d in dev_claims]
        if previous and previous.classifier
        else None
    )
    return DevFigures(
        claims=len(dev_claims),
        balanced_accuracy=round(balanced_accuracy(gold, predicted), 3),
        accuracy_3_labels=round(sum(v == d.label for v, d in zip(verdicts, dev_claims)) / len(dev_claims), 3),
        unsupported_recall=round(sum(not predicted[i] for i in wrong) / max(len(wrong), 1), 3),
        previous_balanced_accuracy=round(balanced_accuracy(gold, previous_predicted), 3)
        if previous_predicted
        else None,
    )
