"""Runs whose process was killed: marking them failed, and resuming them from failure.

A run the CLI executes in its own process is watched by nobody else, so a SIGKILL (an
out-of-memory kill, a closed laptop, a `kill -9`) leaves it STARTED in the instance
forever. The next `ai-pipelines run` on the same host marks such orphans failed, with
the reason, through the instance's public API; runs launched by the webserver or the
daemon are not its business (the daemon's run monitoring is, see deploy/dagster.yaml).

A failed run is then resumed with Dagster's own re-execution from failure: steps that
succeeded are not run again, and the model calls that completed before the kill are
answered by the response cache, which the gateway writes as each answer arrives.
"""

from __future__ import annotations

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    JobDefinition,
    ReexecutionOptions,
    RunsFilter,
    build_reconstructable_job,
    execute_job,
)
from dagster._core.definitions.dependency import NodeHandle
from dagster._core.execution.execution_result import ExecutionResult
from dagster._core.storage.tags import (
    PARENT_RUN_ID_TAG,
    RESUME_RETRY_TAG,
    ROOT_RUN_ID_TAG,
    TAGS_TO_MAYBE_OMIT_ON_RETRY,
)
from pydantic import BaseModel

from ai_pipelines.run_logging import console_logging
from ai_pipelines.run_process import HOST_TAG, PROCESS_TAGS, RunProcess
from ai_pipelines.run_report import RunReport
from ai_pipelines.settings import Settings, load_settings

# A run in one of these states has a process that should still be working on it.
UNFINISHED = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
RESUMABLE = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


class OrphanedRun(BaseModel):
    run_id: str
    job_name: str
    reason: str


def orphan_reason(process: RunProcess, run_id: str) -> str:
    return (
        f"process {process.pid} on host {process.host} is gone: the run was killed; "
        f"resume it with `ai-pipelines run --resume {run_id}`"
    )


def fail_orphaned_runs(instance: DagsterInstance) -> list[OrphanedRun]:
    """Mark failed every unfinished run that a process on this host (and pid namespace)
    executed in-process and that process is gone.

    Only runs tagged by `RunProcess` and never handed to a run launcher qualify: a run
    launched by the webserver or the daemon has a remote origin (and may carry copied
    tags, e.g. a re-execution launched from the UI), and its process is not ours to judge.
    """
    here = RunProcess.current()
    orphans = []
    for run in instance.get_runs(RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: here.host})):
        process = RunProcess.from_tags(run.tags)
        if process is None or run.remote_job_origin is not None or not process.is_visible_from(here):
            continue
        if not process.is_gone():
            continue
        reason = orphan_reason(process, run.run_id)
        instance.report_run_failed(run, reason)
        if instance.event_log_storage.supports_global_concurrency_limits:
            # Slots of a model pool claimed by the dead process would otherwise stay taken.
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        orphans.append(OrphanedRun(run_id=run.run_id, job_name=run.job_name, reason=reason))
    return orphans


class ResumeError(ValueError):
    """The run asked for cannot be resumed; the message says why."""


RUN_COMMAND_JOBS = ("digest_job", "digest_refresh_job")  # what `ai-pipelines run` launches (see backfill)


def run_to_resume(
    instance: DagsterInstance, run_id: str | None, job_names: tuple[str, ...] = RUN_COMMAND_JOBS
) -> DagsterRun:
    """The run named, or else the latest run of `job_names`, provided it failed.

    Without a run id, an older failure that a later run superseded is not resumed: only
    the latest run says what state the assets are in.
    """
    if run_id:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise ResumeError(f"no run {run_id!r} in the Dagster instance at {instance.root_directory}")
    else:
        latest = [r for name in job_names for r in instance.get_run_records(RunsFilter(job_name=name), limit=1)]
        if not latest:
            raise ResumeError(f"nothing to resume: {' or '.join(job_names)} never ran in this Dagster instance")
        run = max(latest, key=lambda r: r.create_timestamp).dagster_run
    if run.status not in RESUMABLE:
        raise ResumeError(
            f"nothing to resume: run {run.run_id} ({run.job_name}) is {run.status.value.lower()}; "
            "only a failed or canceled run can be resumed"
        )
    return run


def job_from_settings(job_name: str) -> JobDefinition:
    """Rebuilds a job of the code location from the settings in the environment: how a
    re-execution reconstructs the job it runs."""
    from ai_pipelines.definitions import build_definitions

    return build_definitions(load_settings()).resolve_job_def(job_name)


def resume_tags(parent: DagsterRun) -> dict[str, str]:
    """The parent's tags (its partition range above all) as Dagster's own re-execution
    keeps them, with this process as the one executing the run."""
    kept = {k: v for k, v in parent.tags.items() if k not in TAGS_TO_MAYBE_OMIT_ON_RETRY and k not in PROCESS_TAGS}
    return {
        **kept,
        **RunProcess.current().tags(),
        PARENT_RUN_ID_TAG: parent.run_id,
        ROOT_RUN_ID_TAG: parent.root_run_id or parent.run_id,
        RESUME_RETRY_TAG: "true",
    }


def resume_run(instance: DagsterInstance, parent: DagsterRun, log_level: str = "WARNING") -> ExecutionResult:
    """Re-execute `parent` from failure in this process: its failed and unfinished steps
    and everything downstream of them, over the parent's partitions."""
    from dagster import DagsterExecutionStepNotFoundError, DagsterInvalidSubsetError

    from ai_pipelines.definitions import build_definitions

    if parent.job_name not in {job.name for job in build_definitions(load_settings()).resolve_all_job_defs()}:
        raise ResumeError(f"run {parent.run_id} ran job {parent.job_name!r}, which this code location does not define")
    run_config = {**(parent.run_config or {}), **console_logging(log_level)}
    try:
        return execute_job(
            build_reconstructable_job(__name__, job_from_settings.__name__, reconstructable_args=(parent.job_name,)),
            instance,
            run_config=run_config,
            tags=resume_tags(parent),
            reexecution_options=ReexecutionOptions.from_failure(parent.run_id, instance),
        )
    except (DagsterExecutionStepNotFoundError, DagsterInvalidSubsetError) as exc:
        raise ResumeError(f"nothing to resume in run {parent.run_id}: {exc}") from exc


def resumed_run_report(result: ExecutionResult, settings: Settings) -> RunReport:
    """The run report, where 'not materialized' means assets this run was meant to
    materialize: those of the steps that succeeded before the kill are not re-run."""
    report = RunReport.from_result(result, settings)
    steps = result.dagster_run.step_keys_to_execute
    if steps is None:
        return report
    layer = result.job_def.asset_layer
    planned = set()
    for step in steps:
        assets_def = layer.get_assets_def_for_node(NodeHandle.from_string(step))
        if assets_def is not None:
            planned |= {key.to_user_string() for key in assets_def.keys}
    return report.model_copy(update={"not_materialized": [a for a in report.not_materialized if a in planned]})
