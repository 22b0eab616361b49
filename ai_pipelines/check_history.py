"""Accepted check runs, and a baseline's verdicts read back from the Dagster instance.

`--baseline last` must work across processes, and across CI jobs that share a Dagster home
or a Postgres instance, so acceptance is recorded where the runs are: an `ai-pipelines check`
whose verdict passed tags its run with ACCEPTED_TAG and the selection it checked, and `last`
is the newest run so tagged for the same selection (a baseline of other assets would compare
only what the two selections share). Any run id can be a baseline, an `ai-pipelines run` too: its cases are rebuilt from
the check evaluations in its event log by the same rules as the live run's
(`checks.partition_cases`, `checks.evaluated_case`), so both sides of a comparison are read alike.
"""

from __future__ import annotations

from dagster import DagsterEventType, DagsterInstance, RunsFilter
from pydantic import BaseModel

from ai_pipelines.check_baselines import BaselineComparison, compare_with_baseline
from ai_pipelines.check_cases import CheckCase
from ai_pipelines.checks import evaluated_case, partition_cases

LAST = "last"
ACCEPTED_TAG = "ai_pipelines/check_accepted"
SELECTION_TAG = "ai_pipelines/check_selection"
EVERY_ASSET = "*"


class BaselineNotFoundError(ValueError):
    """An explicit baseline run id the instance does not hold, or one that evaluated no check."""


class Baseline(BaseModel):
    """The run to compare with and its cases; `run_id` None when `last` found no accepted run."""

    run_id: str | None
    cases: list[CheckCase] = []
    note: str = ""  # why there is no baseline

    def compare(self, cases: list[CheckCase]) -> BaselineComparison:
        if self.run_id is None:
            return BaselineComparison.missing(self.note)
        return compare_with_baseline(self.run_id, self.cases, cases)


def selection_tag(select: str) -> str:
    """The `--select` value as recorded on an accepted run: its items sorted, without repeats."""
    return ",".join(sorted({item.strip() for item in select.split(",") if item.strip()})) or EVERY_ASSET


def accept(instance: DagsterInstance, run_id: str, select: str) -> None:
    """Record that the check run `run_id` of `select` passed: the next `--baseline last` of that selection."""
    instance.add_run_tags(run_id, {ACCEPTED_TAG: "true", SELECTION_TAG: selection_tag(select)})


def last_accepted_run(instance: DagsterInstance, select: str) -> str | None:
    tags = {ACCEPTED_TAG: "true", SELECTION_TAG: selection_tag(select)}
    run_ids = instance.get_run_ids(filters=RunsFilter(tags=tags), limit=1)  # newest first
    return run_ids[0] if run_ids else None


def recorded_cases(instance: DagsterInstance, run_id: str) -> list[CheckCase]:
    """The cases of the check evaluations run `run_id` recorded (no descriptions: a comparison
    needs verdicts, and the report describes the current run's cases)."""
    evaluations = [
        entry.dagster_event.asset_check_evaluation_data
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        if entry.dagster_event is not None
    ]
    return [case for e in evaluations for case in partition_cases(e, "") or [evaluated_case(e, "", set())]]


def find_baseline(instance: DagsterInstance, reference: str, select: str) -> Baseline:
    """`reference`: LAST, or a run id. LAST with no accepted run yet is no baseline (said in the
    report, and no gate fails on it); an unknown run id, or a run that evaluated no check, is an error."""
    if reference == LAST:
        run_id = last_accepted_run(instance, select)
        if run_id is None:
            scope = "" if selection_tag(select) == EVERY_ASSET else f" of --select {selection_tag(select)}"
            return Baseline(run_id=None, note=f"no accepted `ai-pipelines check` run{scope} yet; nothing compared")
        return Baseline(run_id=run_id, cases=recorded_cases(instance, run_id))
    if not instance.has_run(reference):
        raise BaselineNotFoundError(f"no run {reference!r} in the Dagster instance (--baseline takes a run id or last)")
    cases = recorded_cases(instance, reference)
    if not cases:
        raise BaselineNotFoundError(f"run {reference!r} evaluated no asset check: nothing to compare with")
    return Baseline(run_id=reference, cases=cases)
