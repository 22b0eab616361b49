"""The judge's answer fitted as one more feature of the verifier, and kept only where it helps.

The judge answers a fixed sample of each set; its weight is fitted on the fit sets' samples and
measured on each held-out sample beside the verifier alone on the same claims.
"""

from __future__ import annotations

from typing import Callable

from resources import ModelResource
from resources.verification.claim_verification import Calibration, Classifier, model_fingerprint
from resources.verification.fact_check_judge import balanced_accuracy, judge_gain
from resources.verification.fitting.calibration_report import SetFigures
from resources.verification.fitting.classifier_fitting import predict, stack_judge
from resources.verification.fitting.judged_sample import JUDGE_VERDICT, add_judge, judge_sample
from resources.verification.fitting.labelled_sets import FIT_SETS, UNSEEN_SETS
from resources.verification.fitting.scoring import Scored


def judge_figures(
    scored: dict[str, list[Scored]],
    sets: list[SetFigures],
    classifier: Classifier,
    refute_classifier: Classifier | None,
    judge_model: ModelResource,
    judge_claims: int,
    embedding_model: str,
    say: Callable[[str], None],
) -> Calibration:
    """The verifier + the judge on a small fixed sample of each set: the judge's weight is fitted on the
    fit split's sample (`stack_judge`), then measured on each held-out sample beside the verifier alone
    on the same claims. Whether the judge helps is decided on those pairs, unseen sets left out
    (`judge_gain`), and recorded, since a verifier counts the judge as a feature only then."""
    judged = {name: judge_sample(items, judge_claims) for name, items in scored.items()}
    judge = judge_model.open_session()  # a fit is no Dagster run: the judge's calls in a session of their own
    stats = {}
    for name, items in judged.items():
        stats[name] = add_judge(items, judge)
        say(f"judged {name}: {len(items)} claims")
    fit_items = [item for name in FIT_SETS for item in judged[name]]
    judge_classifier = stack_judge(classifier, [s.features.values for s in fit_items], [s.supported for s in fit_items])
    for figures in sets:
        items = judged[figures.name]
        gold = [s.supported for s in items]
        figures.judged_claims = len(items)
        figures.judge = stats[figures.name]
        figures.verifier_on_judged = round(
            balanced_accuracy(gold, predict(classifier, [s.features.values for s in items])), 3
        )
        figures.verifier_judge = round(
            balanced_accuracy(gold, predict(judge_classifier, [s.features.values for s in items])), 3
        )
        figures.judge.raw_balanced_accuracy = round(
            balanced_accuracy(gold, [s.features.values.get(JUDGE_VERDICT, 0.0) > 0 for s in items]), 3
        )
    measured = [s for s in sets if s.judged_claims]
    with_judge = {s.name: s.verifier_judge for s in measured if s.verifier_judge is not None}
    without_judge = {s.name: s.verifier_on_judged for s in measured if s.verifier_on_judged is not None}
    helps, reason = judge_gain(with_judge, without_judge, excluded=UNSEEN_SETS)
    return Calibration(
        fingerprint=model_fingerprint(embedding_model, judge.config.model_for("strong")),
        classifier=judge_classifier,
        refute_classifier=refute_classifier,
        judge=True,
        fit_set=f"{' + '.join(FIT_SETS)} (judge weight on {len(fit_items)} judged claims)",
        examples=len(fit_items),
        heldout=with_judge,
        heldout_without_judge=without_judge,
        judge_helps=helps,
        judge_reason=reason,
    )
