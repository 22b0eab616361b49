"""The `ai-pipelines` command: run the digest job, or fact-check any corpus.

`run` executes the same job that the UI and the schedule launch, against the same
Dagster instance (DAGSTER_HOME), so every run from the terminal shows up in the UI.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

# First: the asset modules that the settings import warn about Dagster's beta APIs.
from ai_pipelines.library_warnings import LIBRARY_WARNINGS, LOG_NAME
from ai_pipelines.run_logging import console_logging
from ai_pipelines.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from dagster import DagsterInstance


def ensure_dagster_home(settings: Settings) -> Path:
    """Use DAGSTER_HOME if set, else a home under the data directory with telemetry off."""
    from ai_pipelines.instance import LEGACY_INSTANCE_YAML, instance_yaml

    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    os.environ["DAGSTER_HOME"] = str(home)
    # Two commands started at once on a new home would both create the instance's SQLite
    # tables and one would fail; the first to take the lock creates them, the other finds them.
    with open(home / ".init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not config.exists() or config.read_text() == LEGACY_INSTANCE_YAML:
            config.write_text(instance_yaml(home))
        from dagster import DagsterInstance

        DagsterInstance.get().dispose()
    return home


def mark_orphaned_runs_failed(instance) -> None:
    """Runs this host executed in a process that is gone are marked failed, and said so."""
    from ai_pipelines.run_recovery import fail_orphaned_runs

    for orphan in fail_orphaned_runs(instance):
        print(f"Marked run {orphan.run_id} ({orphan.job_name}) failed: {orphan.reason}", flush=True)


@contextmanager
def command_instance(settings: Settings) -> Iterator[tuple[Path, DagsterInstance]]:
    """The Dagster home and the instance a command runs against, its connections pooled and
    the runs orphaned by a process that is gone already marked failed."""
    from dagster import DagsterInstance

    from ai_pipelines.instance import pool_connections

    home = ensure_dagster_home(settings)
    with DagsterInstance.get() as instance:
        pool_connections(instance)
        mark_orphaned_runs_failed(instance)
        yield home, instance


def command_resume(args: argparse.Namespace, settings: Settings, instance) -> int:
    from ai_pipelines.run_recovery import ResumeError, resume_run, resumed_run_report, run_to_resume

    try:
        parent = run_to_resume(instance, args.resume or None)
        print(f"Resuming run {parent.run_id} ({parent.job_name}) from failure ...", flush=True)
        result = resume_run(instance, parent, log_level=args.log_level)
    except ResumeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = resumed_run_report(result, settings)
    print(report.render())
    return 0 if report.ok else 1


def stage_lines(instance) -> dict[str, str]:
    """When stdout is not a terminal (a pipe, a log file), a line per stage of the run about to
    start; returns the run id to start it with, whose events the lines follow."""
    if sys.stdout.isatty():
        return {}
    from dagster._core.utils import make_new_run_id

    from ai_pipelines.stage_progress import StageLines

    run_id = make_new_run_id()
    instance.add_event_listener(run_id, StageLines(sys.stdout))
    return {"run_id": run_id}


def run_planned(
    planning: str,
    plan_and_run: Callable[[], tuple[Any, Any]],
    no_input: type[Exception],
    *,
    up_to_date: str,
    done: str,
    report: Callable[[Any], Any],
) -> int:
    """What `run` and `triage` share: plan, run what needs it (or nothing), print the run's report.
    Exit 0 when it passed or there was nothing to do, 1 when it failed or a blocking check
    stopped it, 2 when there was nothing to read."""
    print(planning, flush=True)
    try:
        plan, result = plan_and_run()
    except no_input as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is None:
        print(f"Up to date: {plan.reason}; {up_to_date}.")
        return 0
    print(f"{done}: {plan.reason}.")
    outcome = report(result)
    print(outcome.render())
    return 0 if outcome.ok else 1


def launch_options(args: argparse.Namespace, instance: DagsterInstance) -> dict[str, Any]:
    """How `run` and `triage` execute their run: in this process, a failure reported rather
    than raised, at the console log level asked for, with stage lines when not on a terminal."""
    return {
        "everything": args.all,
        "raise_on_error": False,
        "run_config": console_logging(args.log_level),
        **stage_lines(instance),
    }


def command_run(args: argparse.Namespace, settings: Settings) -> int:
    from ai_pipelines.backfill import NoDocumentsError, run_what_changed
    from ai_pipelines.definitions import build_definitions, build_resources
    from ai_pipelines.run_report import RunReport

    if sys.stderr.isatty():
        from ai_pipelines.progress_bar import TerminalProgressBar
        from resources.gateway.progress import add_listener

        add_listener(TerminalProgressBar(sys.stderr))
    with command_instance(settings) as (home, instance):
        if args.resume is not None:
            return command_resume(args, settings, instance)
        return run_planned(
            f"Planning the digest run (Dagster home {home}) ...",
            lambda: run_what_changed(
                build_definitions(settings),
                instance,
                build_resources(settings)["pipeline"],
                **launch_options(args, instance),
            ),
            NoDocumentsError,
            up_to_date="nothing to materialize (--all re-materializes everything)",
            done="Materialized",
            report=lambda result: RunReport.from_result(result, settings),
        )


def command_triage(args: argparse.Namespace, settings: Settings) -> int:
    from ai_pipelines.definitions import build_definitions, build_resources
    from ai_pipelines.triage_run import NoTicketsError, TriageReport, run_triage

    triage = build_resources(settings).get("triage")
    if triage is None:
        print("error: the code location has no 'triage' resource (support triage is not wired in)", file=sys.stderr)
        return 2
    with command_instance(settings) as (home, instance):
        return run_planned(
            f"Planning the triage run (Dagster home {home}) ...",
            lambda: run_triage(build_definitions(settings), instance, triage, **launch_options(args, instance)),
            NoTicketsError,
            up_to_date="nothing to triage (--all triages every ticket again)",
            done="Triaged",
            report=TriageReport.from_result,
        )


def command_fact_check(args: argparse.Namespace, settings: Settings) -> int:
    from ai_pipelines.corpus_fact_check import explain_lenient, fact_check_lenient

    corpus, claims, use_model = Path(args.corpus), Path(args.claims), not args.no_model
    if args.explain:
        explanations, errors = explain_lenient(settings, corpus, claims, use_model)
        verdicts = [e.verdict for e in explanations]
    else:
        explanations = []
        verdicts, errors = fact_check_lenient(settings, corpus, claims, use_model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for index, verdict in enumerate(verdicts):
            row = {
                "id": verdict.id,
                "verdict": verdict.verdict,
                "score": verdict.score,
                "evidence": verdict.evidence,
                "evidence_sentence": verdict.evidence_sentence,
                "reason": verdict.reason,
            }
            if args.explain:
                row.update(
                    features=verdict.features,
                    judge=verdict.judge,
                    quote=verdict.quote,
                    conflict=verdict.conflict,
                    explanation=explanations[index].model_dump(exclude={"verdict"}),
                )
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    for explanation in explanations:
        print(explanation.to_text() + "\n")
    for error in errors:
        print(error, file=sys.stderr)
    counts = {v: sum(x.verdict == v for x in verdicts) for v in ("supported", "refuted", "not_enough_info")}
    print(
        f"{len(verdicts)} claims verified -> {out} {counts}"
        + (f"; {len(errors)} malformed line(s) skipped" if errors else "")
    )
    return 2 if errors else 0


def command_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from ai_pipelines.calibration import DATA_DIR, calibrate
    from resources.verification.fitting.calibration_files import calibration_to_write, judge_decision, write_calibration

    if args.bundled and args.judge:
        print(
            "error: --bundled writes the embedded default, which is never a judge calibration; "
            "drop --judge, or --bundled to write the judge calibration under its fingerprint",
            file=sys.stderr,
        )
        return 2
    report = calibrate(
        settings,
        Path(args.data) if args.data else DATA_DIR,
        judge=args.judge,
        articles=args.articles,
        judge_claims=args.judge_claims,
    )
    print(report.table())
    calibration = report.judge_calibration or report.calibration
    if report.judge_calibration is not None:
        print("\nVerifier alone and verifier + judge on the same fixed sample of each held-out set\n")
        print(report.judge_table())
        print(f"\n{judge_decision(report.judge_calibration)}")
    print(f"fingerprint {calibration.fingerprint}: held-out balanced accuracy {calibration.heldout}")
    if args.write:
        chosen, why = calibration_to_write(report)
        print(f"written to {write_calibration(chosen, bundled=args.bundled)}" if chosen is not None else why)
    return 0


def command_document(args: argparse.Namespace, settings: Settings) -> int:
    """One document's own history, although Dagster orchestrates it in a batch."""
    from ai_pipelines.document_history import DocumentNotFound, document_history

    with command_instance(settings) as (_, instance):
        try:
            history = document_history(settings.warehouse_path, instance, args.document)
        except DocumentNotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(history.model_dump_json(indent=2) if args.json else history.render())
    return 0


def command_home(args: argparse.Namespace, settings: Settings) -> int:
    print(ensure_dagster_home(settings))
    return 0


def command_stack(args: argparse.Namespace, settings: Settings) -> int:
    from ai_pipelines.stack import Stack, StackError

    try:
        stack = Stack(settings, port=args.port, celery_workers=args.celery_workers, drain_seconds=args.drain_seconds)
        stack.start()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"Webserver on http://127.0.0.1:{args.port}, daemon running (Dagster home {stack.home}); Ctrl-C stops.",
        flush=True,
    )
    return stack.wait()


def command_check(args: argparse.Namespace, settings: Settings) -> int:
    from contextlib import nullcontext, redirect_stdout

    from ai_pipelines.check_history import BaselineNotFoundError, accept, find_baseline
    from ai_pipelines.check_reports import report_targets, write_report
    from ai_pipelines.checks import CheckSelectionError, run_checks

    try:
        targets = report_targets(args.report or [])
        if args.max_regression is not None and not args.baseline:
            raise ValueError("--max-regression needs --baseline (a run id, or last)")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # With a report on stdout, everything else goes to stderr: `>> "$GITHUB_STEP_SUMMARY"` gets the report alone.
    on_stdout = any(t.to_stdout for t in targets)
    table = sys.stderr if on_stdout else sys.stdout
    with redirect_stdout(sys.stderr) if on_stdout else nullcontext():
        with command_instance(settings) as (_, instance):
            try:
                baseline = find_baseline(instance, args.baseline, args.select) if args.baseline else None
                checks = run_checks(
                    settings, instance, select=args.select, materialize=args.materialize, log_level=args.log_level
                )
            except (CheckSelectionError, BaselineNotFoundError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            comparison = baseline.compare(checks.cases) if baseline is not None else None
            report = checks.report(args.min_pass_rate, comparison, args.max_regression)
            if report.ok:  # the baseline of the next `--baseline last`
                accept(instance, report.run_id, args.select)
    print(report.to_text(), file=table, flush=True)
    for target in targets:
        write_report(report, target)
        if not target.to_stdout:
            print(f"{target.format} report: {target.path}", file=table)
    return 0 if report.ok else 1


def command_spend(args: argparse.Namespace, settings: Settings) -> int:
    """Where each spend cap stands in its period, and each endpoint's last minute, over every run."""
    from ai_pipelines.definitions import build_resources
    from resources.gateway.spend_limits import SpendLimits

    limits = SpendLimits(build_resources(settings)["model"])
    caps, minutes = limits.standing(), limits.last_minute()
    if args.json:
        print(
            json.dumps(
                {
                    "spend_caps": [c.model_dump() for c in caps],
                    "tokens_per_minute": [m.model_dump() for m in minutes],
                },
                indent=2,
            )
        )
        return 0
    if not (caps or minutes):
        print(
            "No spend caps or tokens-per-minute limits are set "
            "(AI_PIPELINES_LLM_SPEND_CAPS, AI_PIPELINES_LLM_TOKENS_PER_MINUTE, a fallback's tokens_per_minute)."
        )
        return 0
    for cap in caps:
        limit = " and ".join(
            part
            for part in (
                f"${cap.limit_usd:.4f}" if cap.limit_usd else "",
                f"{cap.limit_tokens} tokens" if cap.limit_tokens else "",
            )
            if part
        )
        remaining = " and ".join(
            part
            for part in (
                f"${cap.remaining_usd:.4f}" if cap.remaining_usd is not None else "",
                f"{cap.remaining_tokens} tokens" if cap.remaining_tokens is not None else "",
            )
            if part
        )
        print(
            f"{cap.name}: {cap.period} from {cap.period_start} UTC, {cap.scope}: spent ${cap.spent_usd:.4f} and "
            f"{cap.spent_tokens} tokens of {limit or 'no limit'}; remaining {remaining or 'unlimited'}"
        )
    for minute in minutes:
        print(f"{minute.endpoint}: {minute.tokens} tokens in the last minute of {minute.limit} a minute")
    return 0


def command_routes(args: argparse.Namespace, settings: Settings) -> int:
    """What the routed steps measured per request type and tier, and the tiers a person pinned."""
    from resources.gateway.tier_routing import TierOutcomes
    from resources.metadata.markdown_tables import markdown_table

    outcomes = TierOutcomes(settings.gateway_state_location)
    if args.pin:
        step, tier = args.pin
        outcomes.pin(step, tier)
        print(f"{step}: pinned to {tier}; every item goes to {tier} until `ai-pipelines routes --unpin {step}`")
        return 0
    if args.unpin:
        was = outcomes.unpin(args.unpin)
        print(f"{args.unpin}: {'unpinned; routed by its measured pass rates' if was else 'was not pinned'}")
        return 0
    rates, pins = outcomes.rates(), outcomes.pins()
    if args.json:
        print(json.dumps({"pass_rates": [r.model_dump() for r in rates], "pins": pins}, indent=2))
        return 0
    if not (rates or pins):
        print("No routed step has recorded an outcome yet (a step with `routing:` records one per answer).")
        return 0
    rows = [{**r.model_dump(), "pinned": pins.get(r.step, "")} for r in rates]
    rows += [{"step": step, "pinned": tier} for step, tier in pins.items() if step not in {r.step for r in rates}]
    print(markdown_table(rows))
    return 0


def command_batches(args: argparse.Namespace, settings: Settings) -> int:
    """The provider batches submitted, latest first: for which asset, how far along, what they cost."""
    from resources.gateway.batch_registry import BatchRegistry
    from resources.metadata.markdown_tables import markdown_table

    batches = BatchRegistry(settings.gateway_state_location).batches(limit=args.limit)
    if args.json:
        print(json.dumps([b.model_dump() for b in batches], indent=2))
        return 0
    if not batches:
        print(
            "No provider batch was submitted (a step with batch allowed and AI_PIPELINES_LLM_BATCH=true submits one)."
        )
        return 0
    columns = ("batch_id", "asset", "status", "handled", "requests", "answered", "invalid", "failed", "unanswered")
    rows = [
        {
            **b.model_dump(include=set(columns)),
            "expected_usd": b.expected_cost_usd,
            "cost_usd": b.cost_usd,
            "submitted_at": b.created_at,
            "reason": b.reason,
        }
        for b in batches
    ]
    print(markdown_table(rows))
    return 0


def command_mcp(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the tools over MCP; with stdio, stdout is the protocol's, so everything else goes to stderr."""
    from ai_pipelines.mcp_server import serve

    serve(
        args.transport,
        port=args.port,
        settings=settings,
        support_desk_dir=Path(args.support_desk_dir) if args.support_desk_dir else None,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="Materialize what is new or changed (documents, then what depends on them) with its blocking checks.",
    )
    run.add_argument(
        "--all",
        action="store_true",
        help="Re-materialize every document and every asset, changed or not (unchanged model calls still come from the cache).",
    )
    run.add_argument("--log-level", default="WARNING", help="Dagster console log level (default WARNING).")
    run.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN_ID",
        help="Re-execute a failed run from failure (default: the latest run this command launched, if it failed); "
        "completed steps are not re-run and completed model calls come from the response cache.",
    )
    triage = commands.add_parser(
        "triage", help="Register every ticket file and triage the tickets not triaged yet (or edited) in one run."
    )
    triage.add_argument("--all", action="store_true", help="Triage every ticket that has a file, triaged or not.")
    triage.add_argument("--log-level", default="WARNING", help="Dagster console log level (default WARNING).")
    check = commands.add_parser("fact-check", help="Verify claims (JSONL) against a folder of documents.")
    check.add_argument("--corpus", required=True, help="Folder of UTF-8 text documents.")
    check.add_argument("--claims", required=True, help='JSONL, one {"id", "text"} object a line.')
    check.add_argument("--out", required=True, help="Where to write verdicts (JSONL).")
    check.add_argument("--no-model", action="store_true", help="Decide from embeddings alone.")
    check.add_argument(
        "--explain",
        action="store_true",
        help="Print how each verdict was reached (every classifier feature with its weight, the probability and "
        "threshold, the hard rules, the judge, the best evidence); the --out rows also carry it as 'explanation'.",
    )
    calibrate = commands.add_parser(
        "calibrate", help="Fit the fact-check classifier for the configured models on FRANK; print held-out figures."
    )
    calibrate.add_argument("--data", default="", help="Folder with the FRANK claim sets (default: the bundled ones).")
    calibrate.add_argument(
        "--judge",
        action="store_true",
        help="Also fit with the configured endpoint's strong model as judge and show whether it raises held-out "
        "balanced accuracy; --write writes that calibration only if it does.",
    )
    calibrate.add_argument("--judge-claims", type=int, default=40, help="Claims per set sent to the judge.")
    calibrate.add_argument("--articles", type=int, default=None, help="Only the first N articles of each set.")
    calibrate.add_argument(
        "--write", action="store_true", help="Write the calibration, keyed by the model fingerprint."
    )
    calibrate.add_argument(
        "--bundled", action="store_true", help="With --write: make it the bundled default (not with --judge)."
    )
    commands.add_parser("home", help="Create the Dagster home (if needed) and print its path.")
    document = commands.add_parser(
        "document",
        help="What happened to one document: its status or quarantine reason, signals, verdicts citing it, "
        "and the materializations of its batch.",
    )
    document.add_argument("document", help="The document's key (e.g. corpus/acme-q3.md) or its content id.")
    document.add_argument("--json", action="store_true", help="Print the history as JSON.")
    checks = commands.add_parser(
        "check",
        help="Run asset checks (latest materializations, or --materialize first); exit 1 on a blocking failure, "
        "a pass rate below --min-pass-rate or regressions above --max-regression; optionally write JUnit, JSON or "
        "markdown reports.",
    )
    checks.add_argument("--select", default="", help="Comma-separated asset keys or group:<name>; default every asset.")
    checks.add_argument("--materialize", action="store_true", help="Materialize the selection (all documents) first.")
    checks.add_argument("--log-level", default="WARNING", help="Dagster console log level (default WARNING).")
    from ai_pipelines.check_reports import DEFAULT_JUNIT_FILE, ReportFileAction, parse_pass_rate, parse_report_format

    checks.add_argument(
        "--report",
        action="append",
        type=parse_report_format,
        metavar="FORMAT",
        help=f"Also write the results as junit, json or markdown (repeatable). Default places: junit {DEFAULT_JUNIT_FILE}, "
        "json and markdown stdout (then the table goes to stderr).",
    )
    checks.add_argument(
        "--report-file",
        action=ReportFileAction,
        metavar="PATH",
        help="The file of the --report just before it ('-' for stdout); a markdown file is appended to.",
    )
    checks.add_argument(
        "--min-pass-rate",
        type=parse_pass_rate,
        metavar="R",
        help="Exit 1 when fewer than R (0 to 1) of the evaluated checks passed, warnings included.",
    )
    checks.add_argument(
        "--baseline",
        metavar="RUN_ID|last",
        help="Compare each case's verdict and each check's pass rate with a run (its id, or last: the newest passing "
        "`check` of the same --select); regressions are listed first in every report.",
    )
    checks.add_argument(
        "--max-regression",
        type=parse_pass_rate,
        metavar="R",
        help="With --baseline: exit 1 when more than R (0 to 1) of the baseline's passing cases fail now.",
    )
    stack = commands.add_parser(
        "stack", help="Production stack: webserver and daemon on Postgres (deploy/dagster.yaml)."
    )
    stack.add_argument("--port", type=int, default=3000)
    stack.add_argument(
        "--celery-workers", type=int, default=0, help="Celery workers to start alongside (executor celery)."
    )
    stack.add_argument(
        "--drain-seconds", type=float, default=300, help="On stop, how long runs in progress may finish."
    )
    spend = commands.add_parser(
        "spend",
        help="What every run and process spent against each spend cap in its current period (calls in flight "
        "at their estimate), and each endpoint's tokens in the last minute.",
    )
    spend.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    mcp = commands.add_parser(
        "mcp",
        help="Serve the support-desk tools, fact_check and search_documents over MCP (stdio, or HTTP on 127.0.0.1).",
    )
    mcp.add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or streamable HTTP."
    )
    mcp.add_argument("--port", type=int, default=8765, help="HTTP port on 127.0.0.1 (default 8765).")
    mcp.add_argument(
        "--support-desk-dir",
        default="",
        help="Support-desk data folder (default: AI_PIPELINES_SUPPORT_DESK_DIR, else the bundled one).",
    )
    routes = commands.add_parser(
        "routes", help="Per routed step, request type and tier: the measured pass rates, and the pinned tier."
    )
    routing = routes.add_mutually_exclusive_group()
    routing.add_argument(
        "--pin", nargs=2, metavar=("STEP", "TIER"), help="Send every item of STEP to TIER (fast or strong)."
    )
    routing.add_argument("--unpin", metavar="STEP", help="Route STEP by its measured pass rates again.")
    routes.add_argument("--json", action="store_true", help="Print the pass rates and pins as JSON.")
    batches = commands.add_parser(
        "batches",
        help="The provider batches submitted, latest first: asset, status, answers, expected and actual cost.",
    )
    batches.add_argument("--limit", type=int, default=50, help="How many of the latest batches (default 50).")
    batches.add_argument("--json", action="store_true", help="Print the batches as JSON.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    LIBRARY_WARNINGS.write_to(settings.data_dir.resolve() / "logs" / LOG_NAME)
    handlers = {
        "run": command_run,
        "triage": command_triage,
        "fact-check": command_fact_check,
        "home": command_home,
        "document": command_document,
        "calibrate": command_calibrate,
        "stack": command_stack,
        "check": command_check,
        "mcp": command_mcp,
        "spend": command_spend,
        "routes": command_routes,
        "batches": command_batches,
    }
    try:
        return handlers[args.command](args, settings)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
