"""A check run compared with a baseline run: what a prompt or model change is judged by.

A pass rate alone hides trades: a change that fixes three documents and breaks two raises
the rate and still breaks two documents that worked. So the comparison is by case, the same
check on the same partition in both runs (`asset:check[partition]`):

- regressed: passed in the baseline, evaluated now and not passed (a warning counts: a
  document a non-blocking check now rejects is still a document that got worse);
- improved: evaluated and not passed in the baseline, passed now;
- a case not evaluated now (blocked upstream) or present in one run only (a new document, a
  removed check) is neither: a blocked upstream check fails the build on its own.

`--max-regression R` bounds the share of the baseline's passing cases, among those
evaluated now, that regressed. This module is pure: reading runs from the instance is
`check_history`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, computed_field

from ai_pipelines.check_cases import CaseStatus, CheckCase

CaseKey = tuple[str, str, str | None]  # asset, check, partition


class VerdictChange(BaseModel):
    """One case whose verdict changed between the baseline and now."""

    asset: str
    check: str
    partition: str | None = None
    before: CaseStatus
    now: CaseStatus
    description: str = ""  # what the current evaluation found

    @property
    def label(self) -> str:
        name = f"{self.check}[{self.partition}]" if self.partition is not None else self.check
        return f"{self.asset}:{name}"


class PassRateChange(BaseModel):
    """One check's share of passing cases (its partitions, or its one case), before and now."""

    asset: str
    check: str
    before_passed: int
    before_evaluated: int
    now_passed: int
    now_evaluated: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def before(self) -> float:
        return round(self.before_passed / self.before_evaluated, 4)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def now(self) -> float:
        return round(self.now_passed / self.now_evaluated, 4)

    @property
    def change(self) -> float:
        return self.now_passed / self.now_evaluated - self.before_passed / self.before_evaluated


class BaselineComparison(BaseModel):
    """What a report says about its baseline. `run_id` None: none was found, and `note` says
    why; nothing is compared then and no gate can fail on it."""

    run_id: str | None
    note: str = ""
    baseline_passing: int = 0  # cases that passed in the baseline and were evaluated now
    regressed: list[VerdictChange] = []  # regressed partitions first, then single-case checks
    improved: list[VerdictChange] = []
    pass_rate_changes: list[PassRateChange] = []  # largest drop first

    @computed_field  # type: ignore[prop-decorator]
    @property
    def regression_share(self) -> float | None:
        """Regressed cases over the baseline's passing cases evaluated now; None with none."""
        return round(len(self.regressed) / self.baseline_passing, 4) if self.baseline_passing else None

    @classmethod
    def missing(cls, note: str) -> "BaselineComparison":
        return cls(run_id=None, note=note)


def _evaluated_by_key(cases: Sequence[CheckCase]) -> dict[CaseKey, CheckCase]:
    """The evaluated cases by key; a check evaluated twice in one run counts by its last verdict."""
    return {(c.asset, c.check, c.partition): c for c in cases if c.evaluated}


def _change(before: CheckCase, now: CheckCase) -> VerdictChange:
    return VerdictChange(
        asset=now.asset,
        check=now.check,
        partition=now.partition,
        before=before.status,
        now=now.status,
        description=now.result_description,
    )


def _pass_rates(cases: Sequence[CheckCase]) -> dict[tuple[str, str], tuple[int, int]]:
    """(passed, evaluated) per check."""
    rates: dict[tuple[str, str], tuple[int, int]] = {}
    for case in cases:
        passed, evaluated = rates.get((case.asset, case.check), (0, 0))
        rates[(case.asset, case.check)] = (passed + (case.status == "passed"), evaluated + 1)
    return rates


def compare_with_baseline(run_id: str, baseline: Sequence[CheckCase], cases: Sequence[CheckCase]) -> BaselineComparison:
    """Compare `cases` (this run) with `baseline` (the cases of run `run_id`), in this run's
    order, regressed partitions before regressed single-case checks."""
    before = _evaluated_by_key(baseline)
    now = _evaluated_by_key(cases)
    regressed: list[VerdictChange] = []
    improved: list[VerdictChange] = []
    baseline_passing = 0
    for key, case in now.items():
        old = before.get(key)
        if old is None:
            continue
        if old.status == "passed":
            baseline_passing += 1
            if case.status != "passed":
                regressed.append(_change(old, case))
        elif case.status == "passed":
            improved.append(_change(old, case))
    rates_before = _pass_rates(list(before.values()))
    changes = [
        PassRateChange(
            asset=asset,
            check=check,
            before_passed=rates_before[(asset, check)][0],
            before_evaluated=rates_before[(asset, check)][1],
            now_passed=passed,
            now_evaluated=evaluated,
        )
        for (asset, check), (passed, evaluated) in _pass_rates(list(now.values())).items()
        if (asset, check) in rates_before
    ]
    return BaselineComparison(
        run_id=run_id,
        baseline_passing=baseline_passing,
        regressed=sorted(regressed, key=lambda c: c.partition is None),
        improved=sorted(improved, key=lambda c: c.partition is None),
        pass_rate_changes=sorted((c for c in changes if abs(c.change) > 1e-12), key=lambda c: c.change),
    )


def above_max_regression(comparison: BaselineComparison | None, max_regression: float | None) -> bool:
    # The exact share, not the rounded one, with room for 0.1 read as 0.10000000000000001.
    if comparison is None or max_regression is None or not comparison.baseline_passing:
        return False
    return len(comparison.regressed) / comparison.baseline_passing > max_regression + 1e-9


def regression_sentence(comparison: BaselineComparison, max_regression: float | None) -> str:
    """How many of the baseline's passing cases regressed, against the limit when there is one."""
    if comparison.run_id is None:
        return f"no baseline: {comparison.note}"
    share = comparison.regression_share
    counted = (
        f"{len(comparison.regressed)} of {comparison.baseline_passing} cases that passed in baseline run "
        f"{comparison.run_id} now fail" + (f" ({share:.1%})" if share is not None else "")
    )
    if max_regression is None:
        return counted
    if above_max_regression(comparison, max_regression):
        return f"FAILED: {counted}, more than the maximum {max_regression:.1%} (--max-regression {max_regression:g})"
    return f"{counted}, within the maximum {max_regression:.1%}"
