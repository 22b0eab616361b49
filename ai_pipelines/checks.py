"""`ai-pipelines check`: the asset checks from the command line, for CI.

Dagster runs checks as part of materializations and from the UI, but has no command
that runs them on their own and fails a build (upstream issue #17606). This runs the
selected assets' checks against their latest materializations, or materializes the
selection first (`--materialize`), prints one line per check and says, by exit code,
whether a blocking check failed.
"""

from __future__ import annotations

from dagster import AssetKey, AssetSelection, DagsterInstance, Definitions, define_asset_job
from pydantic import BaseModel

from ai_pipelines.backfill import all_documents_tags, run_over_all_documents
from ai_pipelines.report import CheckOutcome, RunReport
from ai_pipelines.run_process import RunProcess
from ai_pipelines.settings import Settings

CHECKS_JOB = "asset_checks_cli"


class CheckSelectionError(ValueError):
    pass


class CheckRun(BaseModel):
    run_id: str
    outcomes: list[CheckOutcome]
    not_run: list[str]  # checks the run planned but did not evaluate (blocked upstream, or failed steps)
    run_failed: bool

    @property
    def ok(self) -> bool:
        return not self.run_failed and not any(o.blocking and not o.passed for o in self.outcomes)

    def render(self) -> str:
        width = max([len(f"{o.asset}:{o.check}") for o in self.outcomes] + [len(n) for n in self.not_run] + [10])
        lines = [f"{'result':<6}  {'severity':<8}  {'check'.ljust(width)}  description"]
        for o in self.outcomes:
            result = "PASS" if o.passed else "FAIL"
            severity = "ERROR" if o.blocking else "WARN"
            lines.append(f"{result:<6}  {severity:<8}  {f'{o.asset}:{o.check}'.ljust(width)}  {o.description}")
        lines += [f"{'SKIP':<6}  {'':<8}  {name.ljust(width)}  not evaluated: an upstream step failed or was blocked" for name in self.not_run]
        failed = [o for o in self.outcomes if o.blocking and not o.passed]
        verdict = "FAILED" if not self.ok else "passed"
        lines.append(
            f"\n{len(self.outcomes)} checks evaluated, {len(failed)} blocking failures: {verdict} (run {self.run_id})"
        )
        return "\n".join(lines)


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
            raise CheckSelectionError(f"no asset named {item!r} (known: {', '.join(sorted(k.to_user_string() for k in everything))})")
    return sorted(selection.resolve(graph) & everything)


def run_checks(
    settings: Settings, instance: DagsterInstance, select: str = "", materialize: bool = False, log_level: str = "WARNING"
) -> CheckRun:
    from ai_pipelines.definitions import build_definitions, build_resources

    defs = build_definitions(settings)
    keys = resolve_selection(defs, select)
    pipeline = build_resources(settings)["pipeline"]
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if materialize:
        job = defs.resolve_job_def("digest_job")
        result = run_over_all_documents(
            job, instance, pipeline, raise_on_error=False, asset_selection=keys, run_config=run_config
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
    report = RunReport.from_result(result, settings)
    planned = {f"{k.asset_key.to_user_string()}:{k.name}" for k in result.job_def.asset_layer.asset_graph.asset_check_keys
               if k.asset_key in set(keys)}
    evaluated = {f"{o.asset}:{o.check}" for o in report.checks}
    return CheckRun(
        run_id=result.run_id,
        outcomes=report.checks,
        not_run=sorted(planned - evaluated),
        run_failed=not result.success and not report.blocked_by,
    )
