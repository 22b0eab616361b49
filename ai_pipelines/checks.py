"""`ai-pipelines check`: the asset checks from the command line, for CI.

Dagster runs checks as part of materializations and from the UI, but has no command
that runs them on their own and fails a build (upstream issue #17606). This runs the
selected assets' checks against their latest materializations, or materializes the
selection first (`--materialize`), prints one line per check and says, by exit code,
whether a blocking check failed; `check_reports` writes the same results for CI tools.

Dagster records a check evaluation's partition only for a partitioned check run for one
partition. The digest's checks are unpartitioned and its runs span every document, so
each check is one evaluation over the whole table; a check that records each partition's
verdict (`partition_results`) becomes one case per partition, the others stay one case.
A passing check run is recorded as accepted, the baseline that `--baseline last` compares
the next one with (`check_history`, `check_baselines`).
"""

from __future__ import annotations

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    define_asset_job,
)
from pydantic import BaseModel

from ai_pipelines.backfill import all_documents_tags, run_over_all_documents
from ai_pipelines.check_baselines import BaselineComparison
from ai_pipelines.check_cases import CheckCase
from ai_pipelines.check_reports import CheckReport, metadata_value, partitions_named
from ai_pipelines.run_logging import console_logging
from ai_pipelines.run_process import RunProcess
from ai_pipelines.settings import Settings
from assets.components.partitions import DOCUMENT_BATCHES, DOCUMENTS
from resources.metadata.partition_results import PARTITION_RESULTS

CHECKS_JOB = "asset_checks_cli"


class CheckSelectionError(ValueError):
    pass


class CheckRun(BaseModel):
    run_id: str
    cases: list[CheckCase]  # evaluated checks as they ran, then the planned checks the run did not evaluate
    run_failed: bool  # a step failed for another reason than a blocking check

    def report(
        self,
        min_pass_rate: float | None = None,
        baseline: BaselineComparison | None = None,
        max_regression: float | None = None,
    ) -> CheckReport:
        return CheckReport.build(self.run_id, self.cases, self.run_failed, min_pass_rate, baseline, max_regression)


def partition_cases(evaluation: AssetCheckEvaluation, check_description: str) -> list[CheckCase]:
    """One case per partition of a whole-table check that recorded each partition's verdict
    (`partition_results`, see resources/metadata/partition_results.py). A partition that failed counts as
    a blocking failure only when the check as a whole failed and blocks; otherwise it is a
    warning, counted by `--min-pass-rate`."""
    verdicts = evaluation.metadata.get(PARTITION_RESULTS)
    if evaluation.partition is not None or verdicts is None or not isinstance(verdicts.value, dict):
        return []
    blocking = bool(evaluation.blocking) and evaluation.severity == AssetCheckSeverity.ERROR
    return [
        CheckCase(
            asset=evaluation.asset_key.to_user_string(),
            check=evaluation.check_name,
            partition=partition,
            status="passed" if verdict.get("passed") else "failed" if blocking and not evaluation.passed else "warning",
            blocking=blocking,
            check_description=check_description,
            result_description=str(verdict.get("reason") or evaluation.description or ""),
        )
        for partition, verdict in sorted(verdicts.value.items())
    ]


def evaluated_case(evaluation: AssetCheckEvaluation, check_description: str, partition_keys: set[str]) -> CheckCase:
    """`partition_keys`: the checked asset's partitions, to find the ones a failing
    whole-table evaluation names in its recorded rows (empty: look for none)."""
    blocking = bool(evaluation.blocking) and evaluation.severity == AssetCheckSeverity.ERROR
    metadata = {key: metadata_value(value.value) for key, value in evaluation.metadata.items()}
    whole_table_failure = not evaluation.passed and evaluation.partition is None
    return CheckCase(
        asset=evaluation.asset_key.to_user_string(),
        check=evaluation.check_name,
        partition=evaluation.partition,
        status="passed" if evaluation.passed else "failed" if blocking else "warning",
        blocking=blocking,
        check_description=check_description,
        result_description=evaluation.description or "",
        metadata=metadata,
        failing_partitions=partitions_named(metadata, partition_keys) if whole_table_failure else [],
    )


def check_cases(result: ExecuteInProcessResult, keys: list[AssetKey], instance: DagsterInstance) -> list[CheckCase]:
    """One case per check evaluation the run recorded, then one skipped case per check on
    `keys` that the run planned and did not evaluate."""
    graph = result.job_def.asset_layer.asset_graph

    def description(key: AssetCheckKey) -> str:
        return graph.get_check_spec(key).description or ""

    def partition_keys(asset: AssetKey) -> set[str]:
        """The keys a failing check's rows may name: for document batches, the documents
        (rows name the document, and the document is what a person fixes)."""
        partitions_def = graph.get(asset).partitions_def
        if partitions_def == DOCUMENT_BATCHES:
            return set(instance.get_dynamic_partitions(DOCUMENTS.name))
        return set(partitions_def.get_partition_keys(dynamic_partitions_store=instance)) if partitions_def else set()

    evaluations = result.get_asset_check_evaluations()
    cases = [
        case
        for e in evaluations
        for case in partition_cases(e, description(e.asset_check_key))
        or [evaluated_case(e, description(e.asset_check_key), partition_keys(e.asset_key) if not e.passed else set())]
    ]
    planned = {k for k in graph.asset_check_keys if k.asset_key in set(keys)}
    not_run = sorted(
        planned - {e.asset_check_key for e in evaluations}, key=lambda k: (k.asset_key.to_user_string(), k.name)
    )
    cases += [
        CheckCase(
            asset=k.asset_key.to_user_string(),
            check=k.name,
            status="skipped",
            blocking=graph.get_check_spec(k).blocking,
            check_description=description(k),
        )
        for k in not_run
    ]
    return cases


def resolve_selection(defs: Definitions, select: str) -> list[AssetKey]:
    """Comma-separated asset keys and `group:<name>` items; empty = every asset of digest_job
    (the published digest is materialized only by a person's approval, and has no checks)."""
    graph = defs.resolve_asset_graph()
    everything = set(defs.resolve_job_def("digest_job").asset_layer.executable_asset_keys)
    if not select.strip():
        return sorted(everything)
    selection = AssetSelection.assets()
    for item in (i.strip() for i in select.split(",") if i.strip()):
        if item.startswith("group:"):
            group = item.removeprefix("group:")
            if not any(graph.get(k).group_name == group for k in everything):
                raise CheckSelectionError(f"no asset group named {group!r}")
            selection |= AssetSelection.groups(group)
        elif AssetKey.from_user_string(item) in everything:
            selection |= AssetSelection.assets(AssetKey.from_user_string(item))
        else:
            raise CheckSelectionError(
                f"no asset named {item!r} (known: {', '.join(sorted(k.to_user_string() for k in everything))})"
            )
    return sorted(selection.resolve(graph) & everything)


def run_checks(
    settings: Settings,
    instance: DagsterInstance,
    select: str = "",
    materialize: bool = False,
    log_level: str = "WARNING",
) -> CheckRun:
    from ai_pipelines.definitions import build_definitions, build_resources

    defs = build_definitions(settings)
    keys = resolve_selection(defs, select)
    pipeline = build_resources(settings)["pipeline"]
    run_config = console_logging(log_level)
    if materialize:
        job = defs.resolve_job_def("digest_job")
        # An asset of a multi-asset that cannot be subset (source_documents) brings its siblings.
        whole = AssetSelection.assets(*keys).required_multi_asset_neighbors().resolve(defs.resolve_asset_graph())
        result = run_over_all_documents(
            job, instance, pipeline, raise_on_error=False, asset_selection=sorted(whole), run_config=run_config
        )
    else:
        never = [k.to_user_string() for k in keys if instance.get_latest_materialization_event(k) is None]
        if never:
            raise CheckSelectionError(
                f"never materialized: {', '.join(never)}; materialize them first (ai-pipelines run) or pass --materialize"
            )
        checks_job = define_asset_job(CHECKS_JOB, selection=AssetSelection.checks_for_assets(*keys))
        job = Definitions.merge(defs, Definitions(jobs=[checks_job])).resolve_job_def(CHECKS_JOB)
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={**all_documents_tags(instance), **RunProcess.current().tags()},
            run_config=run_config,
        )
    cases = check_cases(result, keys, instance)
    blocked = any(c.status == "failed" for c in cases)
    return CheckRun(run_id=result.run_id, cases=cases, run_failed=not result.success and not blocked)
