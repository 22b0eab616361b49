"""`ai-pipelines check --report ...`, `--min-pass-rate` and `--baseline`: the results as CI tools read them.

The renderers and the comparison with a baseline are tested on hand-built cases (unit); reading
a baseline back from the instance on a toy partitioned asset (integration); the command on the digest
against the fake OpenAI server with one document's extraction made to fail, so that a
blocking check fails, a warning fails and the downstream checks are not evaluated
(integration); and a partitioned check on a toy asset shows where per-partition cases
come from (integration: it runs Dagster)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    DynamicPartitionsDefinition,
    MetadataValue,
    asset,
    asset_check,
    define_asset_job,
)

from ai_pipelines.check_baselines import BaselineComparison, compare_with_baseline
from ai_pipelines.check_history import (
    LAST,
    BaselineNotFoundError,
    accept,
    find_baseline,
)
from ai_pipelines.check_reports import (
    DEFAULT_JUNIT_FILE,
    CheckCase,
    CheckReport,
    ReportTarget,
    partitions_named,
    report_targets,
)
from ai_pipelines.checks import check_cases
from ai_pipelines.cli import build_parser, main
from ai_pipelines.definitions import build_definitions
from resources.metadata.markdown_tables import markdown_table
from tests.conftest import fake_settings, warehouse_rows
from tests.fake_openai import FakeOpenAI, extract_signals

unit, integration = pytest.mark.unit, pytest.mark.integration

# --- Renderers on hand-built cases ------------------------------------------------------------------

VALIDITY = "Share of documents whose signals validated and grounded is at least min_signal_validity."


def cases() -> list[CheckCase]:
    return [
        CheckCase(
            asset="source_documents",
            check="corpus_parsed",
            status="passed",
            blocking=True,
            check_description="Enough of the corpus parsed.",
            result_description="0 of 3 files failed to parse",
        ),
        CheckCase(
            asset="signals",
            check="signal_validity",
            status="failed",
            blocking=True,
            check_description=VALIDITY,
            result_description="1 of 3 documents have valid, grounded signals",
            metadata={"validity_rate": 0.333, "not_valid": "| title | status |\n|---|---|\n| A \\| B | failed |"},
            failing_partitions=["corpus/a.md", "corpus/b.md"],
        ),
        CheckCase(
            asset="signals",
            check="signal_requests_succeeded",
            status="warning",
            blocking=False,
            check_description="Warns when requests failed.",
            result_description="2 of 3 model requests failed",
        ),
        CheckCase(
            asset="tickets",
            check="readable",
            partition="t-1",
            status="passed",
            blocking=True,
            check_description="Readable.",
            result_description="ok",
        ),
        CheckCase(
            asset="tickets",
            check="readable",
            partition="t-2",
            status="failed",
            blocking=True,
            check_description="Readable.",
            result_description="bell \x07 in the text",
        ),
        CheckCase(
            asset="summaries",
            check="summaries_only_supported_claims",
            status="skipped",
            blocking=True,
            check_description="Every published sentence is supported.",
        ),
    ]


@unit
def test_junit_has_one_testcase_per_case_and_failures_carry_the_check_description():
    report = CheckReport.build("run-1", cases(), run_failed=False)
    root = ET.fromstring(report.to_junit())  # control characters in results do not make it unparseable

    suite = root.find("testsuite")
    assert root.tag == "testsuites" and suite is not None
    assert {k: suite.get(k) for k in ("tests", "failures", "skipped", "errors")} == {
        "tests": "6",
        "failures": "3",
        "skipped": "1",
        "errors": "0",
    }
    testcases = {(t.get("classname"), t.get("name")): t for t in suite.iter("testcase")}
    assert list(testcases) == [
        ("source_documents", "corpus_parsed"),
        ("signals", "signal_validity"),
        ("signals", "signal_requests_succeeded"),
        ("tickets", "readable[t-1]"),
        ("tickets", "readable[t-2]"),
        ("summaries", "summaries_only_supported_claims"),
    ]
    blocking = testcases[("signals", "signal_validity")].find("failure")
    assert blocking.get("message") == VALIDITY and blocking.get("type") == "error"
    assert (
        "1 of 3 documents have valid" in blocking.text
        and "failing partitions: corpus/a.md, corpus/b.md" in blocking.text
    )
    assert "validity_rate: 0.333" in blocking.text and "| A \\| B | failed |" in blocking.text
    warning = testcases[("signals", "signal_requests_succeeded")].find("failure")
    assert warning.get("type") == "warning" and warning.get("message") == "Warns when requests failed."
    assert testcases[("summaries", "summaries_only_supported_claims")].find("skipped") is not None
    assert testcases[("source_documents", "corpus_parsed")].find("failure") is None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["run_id"] == "run-1" and properties["verdict"] == "failed"


@unit
def test_json_report_holds_every_case_the_totals_and_the_verdict():
    report = CheckReport.build("run-1", cases(), run_failed=False, min_pass_rate=0.5)
    data = json.loads(report.to_json())
    assert data["run_id"] == "run-1" and data["verdict"] == "failed" and data["min_pass_rate"] == 0.5
    assert data["totals"] == {
        "cases": 6,
        "evaluated": 5,
        "passed": 2,
        "failed": 2,
        "warnings": 1,
        "skipped": 1,
        "pass_rate": 0.4,
    }
    assert [(c["check"], c["partition"], c["status"]) for c in data["cases"]][3:5] == [
        ("readable", "t-1", "passed"),
        ("readable", "t-2", "failed"),
    ]
    assert data["cases"][1]["failing_partitions"] == ["corpus/a.md", "corpus/b.md"]
    assert data["cases"][1]["metadata"]["validity_rate"] == 0.333  # recorded numbers stay numbers
    assert CheckReport.model_validate_json(report.to_json()) == report
    assert any("below the minimum 50.0%" in r for r in data["reasons"])


@unit
def test_markdown_summary_lists_failures_first_in_one_table():
    text = CheckReport.build("run-1", cases(), run_failed=False).to_markdown()
    lines = text.splitlines()
    assert lines[0] == "### Asset checks: FAILED"
    rows = [line for line in lines if line.startswith("| ")][1:]  # after the header row
    assert len(rows) == 6
    assert [r.split(" | ")[0] for r in rows] == [
        "| ❌ fail",
        "| ❌ fail",
        "| ⚠️ warn",
        "| ⏭️ skip",
        "| ✅ pass",
        "| ✅ pass",
    ]
    assert "| signals | signal_validity |  | 1 of 3 documents" in text and "failing partitions: corpus/a.md" in text
    assert "| tickets | readable | t-2 |" in text
    assert "pass rate 40.0%" in text and text.endswith("\n")


@unit
def test_pass_rate_counts_warnings_and_fails_below_the_minimum():
    passed = CheckCase(asset="a", check="c", status="passed", blocking=True)
    warning = CheckCase(asset="a", check="w", status="warning", blocking=False)
    skipped = CheckCase(asset="a", check="s", status="skipped", blocking=True)
    three_of_four = [passed, passed, passed, warning, skipped]

    assert CheckReport.build("r", three_of_four, run_failed=False).ok  # warnings alone never fail the build
    assert CheckReport.build("r", three_of_four, run_failed=False, min_pass_rate=0.75).ok  # at the minimum passes
    low = CheckReport.build("r", three_of_four, run_failed=False, min_pass_rate=0.8)
    assert not low.ok and low.totals.pass_rate == 0.75
    assert (
        "FAILED: pass rate 75.0% (3 of 4 evaluated checks passed) is below the minimum 80.0% (--min-pass-rate 0.8)"
        in low.to_text()
    )
    blocked = [passed, CheckCase(asset="a", check="b", status="failed", blocking=True)]
    assert not CheckReport.build("r", blocked, run_failed=False, min_pass_rate=0).ok  # blocking fails regardless
    nothing = CheckReport.build("r", [skipped], run_failed=False, min_pass_rate=1)
    assert nothing.ok and nothing.totals.pass_rate is None and "no check was evaluated" in nothing.to_text()


@unit
def test_failing_partitions_are_exact_keys_named_in_recorded_rows():
    keys = {"corpus/a.md", "corpus/b.md", "corpus/c.md"}
    metadata = {
        "failures": markdown_table(
            [
                {"document": "corpus/a.md", "error": "corpus/c.md mentioned in prose"},
                {"document": "corpus/b" + "x" * 200, "error": "cut"},
            ],
            width=20,
        ),
        "missing": ["corpus/b.md", {"nested": "corpus/c.md"}],
        "rate": 0.5,
        "document": "corpus/a.md",
    }
    assert partitions_named(metadata, keys) == ["corpus/a.md", "corpus/b.md", "corpus/c.md"]
    assert (
        partitions_named({"failures": markdown_table([{"document": "corpus/a.md" + "x" * 30}], width=20)}, keys) == []
    )


@unit
def test_report_file_names_the_file_of_the_report_before_it():
    def targets(*args: str) -> list[ReportTarget]:
        return report_targets(build_parser().parse_args(["check", *args]).report or [])

    assert targets() == []
    assert targets("--report", "junit", "--report", "markdown") == [
        ReportTarget(format="junit", path=DEFAULT_JUNIT_FILE),
        ReportTarget(format="markdown", path="-"),
    ]
    assert targets(
        "--report", "json", "--report-file", "out/c.json", "--report", "junit", "--report-file", "c.xml"
    ) == [ReportTarget(format="json", path="out/c.json"), ReportTarget(format="junit", path="c.xml")]
    with pytest.raises(ValueError, match="only one report can go to stdout"):
        targets("--report", "json", "--report", "markdown")
    for wrong in (
        ["--report-file", "x"],
        ["--report", "json", "--report-file", "a", "--report-file", "b"],
        ["--report", "xml"],
        ["--min-pass-rate", "1.5"],
        ["--min-pass-rate", "most"],
        ["--max-regression", "-0.1"],
    ):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["check", *wrong])
        assert exit_.value.code == 2


# --- Baselines: the comparison on hand-built cases ----------------------------------------------------


def case(check: str, status: str, partition: str | None = None, asset: str = "signals") -> CheckCase:
    return CheckCase(asset=asset, check=check, partition=partition, status=status, blocking=True)  # type: ignore[arg-type]


def baseline_and_now() -> tuple[list[CheckCase], list[CheckCase]]:
    """Six documents of one per-document check and three single-case checks: in the change,
    b.md and the whole-table `requests` regress (b.md to a warning), d.md and `parsed` improve,
    e.md is blocked upstream now, f.md is new and g.md is gone."""
    before = [
        case("validity", "passed", "a.md"),
        case("validity", "passed", "b.md"),
        case("validity", "passed", "c.md"),
        case("validity", "failed", "d.md"),
        case("validity", "passed", "e.md"),
        case("validity", "passed", "g.md"),
        case("requests", "passed"),
        case("parsed", "warning", asset="source_documents"),
        case("stable", "passed", asset="source_documents"),
    ]
    now = [
        case("parsed", "passed", asset="source_documents"),
        case("stable", "passed", asset="source_documents"),
        case("requests", "failed"),
        case("validity", "passed", "a.md"),
        case("validity", "warning", "b.md"),
        case("validity", "passed", "c.md"),
        case("validity", "passed", "d.md"),
        case("validity", "skipped", "e.md"),
        case("validity", "failed", "f.md"),
    ]
    return before, now


@unit
def test_comparison_lists_regressed_partitions_first_then_pass_rate_changes_and_improvements():
    before, now = baseline_and_now()
    comparison = compare_with_baseline("run-0", before, now)

    assert comparison.run_id == "run-0"
    # Regressed: passed before, evaluated and not passed now; partitions before single-case checks.
    assert [(c.label, c.before, c.now) for c in comparison.regressed] == [
        ("signals:validity[b.md]", "passed", "warning"),
        ("signals:requests", "passed", "failed"),
    ]
    assert [c.label for c in comparison.improved] == ["signals:validity[d.md]", "source_documents:parsed"]
    # The denominator: the baseline's passing cases evaluated now (a, b, c, requests, stable),
    # not e.md (not evaluated now) nor g.md (gone); f.md is new and compares with nothing.
    assert comparison.baseline_passing == 5 and comparison.regression_share == 0.4
    rates = [(c.asset, c.check, c.before, c.now) for c in comparison.pass_rate_changes]
    assert rates == [
        ("signals", "requests", 1.0, 0.0),  # the largest drop first
        ("signals", "validity", 0.8333, 0.6),  # 5 of 6 evaluated, now 3 of 5 (e.md skipped, f.md new)
        ("source_documents", "parsed", 0.0, 1.0),
    ]
    # The same verdicts compare as no change at all.
    same = compare_with_baseline("run-0", now, now)
    assert same.regressed == same.improved == same.pass_rate_changes == [] and same.baseline_passing == 5


@unit
def test_max_regression_fails_the_report_only_above_the_share():
    before, now = baseline_and_now()
    comparison = compare_with_baseline("run-0", before, now)
    passing_now = [c.model_copy(update={"status": "passed"}) if c.status != "skipped" else c for c in now]

    def report(max_regression: float | None, cases: list[CheckCase] = passing_now) -> CheckReport:
        return CheckReport.build("run-1", cases, run_failed=False, baseline=comparison, max_regression=max_regression)

    assert report(None).ok  # regressions are reported, and fail nothing without a limit
    assert report(0.4).ok  # at the limit passes (2 of 5)
    over = report(0.39)
    assert not over.ok
    assert over.reasons == [
        "FAILED: 2 of 5 cases that passed in baseline run run-0 now fail (40.0%), more than the maximum 39.0% "
        "(--max-regression 0.39)"
    ]
    assert over.reasons[0] in over.to_text()
    missing = BaselineComparison.missing("no accepted `ai-pipelines check` run yet; nothing compared")
    nothing = CheckReport.build("run-1", passing_now, run_failed=False, baseline=missing, max_regression=0)
    assert nothing.ok and "no baseline: no accepted `ai-pipelines check` run yet" in nothing.to_text()


@unit
def test_every_report_format_leads_with_the_regressions():
    before, now = baseline_and_now()
    report = CheckReport.build(
        "run-1", now, run_failed=False, baseline=compare_with_baseline("run-0", before, now), max_regression=0
    )

    markdown = report.to_markdown().splitlines()
    assert markdown[:3] == ["### Asset checks: FAILED", "", "#### Regressions"]
    rows = [line for line in markdown if line.startswith("| ") and not line.startswith("| asset")]
    assert rows[0].startswith("| signals | validity | b.md | ✅ pass | ⚠️ warn |")  # the first row of the report
    assert rows[1].startswith("| signals | requests |  | ✅ pass | ❌ fail |")
    assert "Pass-rate changes:" in markdown and "Improvements:" in markdown
    assert (
        markdown.index("Pass-rate changes:")
        < markdown.index("Improvements:")
        < markdown.index(next(line for line in markdown if line.startswith("Run `run-1`")))
    )

    text = report.to_text().splitlines()
    assert text[0].startswith("FAILED: 2 of 5 cases that passed in baseline run run-0 now fail")
    assert text[1].startswith("REGRESSED  signals:validity[b.md]: passed -> warning")

    data = json.loads(report.to_json())
    baseline = data["baseline"]
    assert baseline["run_id"] == "run-0" and baseline["regression_share"] == 0.4 and data["max_regression"] == 0
    assert [(c["partition"], c["before"], c["now"]) for c in baseline["regressed"]] == [
        ("b.md", "passed", "warning"),
        (None, "passed", "failed"),
    ]
    assert [c["check"] for c in baseline["improved"]] == ["validity", "parsed"]
    assert baseline["pass_rate_changes"][0] == {
        "asset": "signals",
        "check": "requests",
        "before_passed": 1,
        "before_evaluated": 1,
        "now_passed": 0,
        "now_evaluated": 1,
        "before": 1.0,
        "now": 0.0,
    }
    assert CheckReport.model_validate_json(report.to_json()) == report

    suite = ET.fromstring(report.to_junit()).find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["baseline_run_id"] == "run-0" and properties["regressed"] == "2"
    testcases = {t.get("name"): t for t in suite.iter("testcase")}
    regressed = testcases["validity[b.md]"]
    assert regressed.find("properties/property").attrib == {
        "name": "regressed",
        "value": "passed in baseline run run-0",
    }
    assert regressed.find("failure").text.startswith("REGRESSED: warning, passed in baseline run run-0\n")
    assert testcases["validity[d.md]"].find("properties/property").get("name") == "improved"
    assert testcases["validity[a.md]"].find("properties") is None


@unit
def test_max_regression_without_a_baseline_is_an_error_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AI_PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["check", "--max-regression", "0"]) == 2
    assert "--max-regression needs --baseline (a run id, or last)" in capsys.readouterr().err
    assert not (tmp_path / "data" / "dagster_home").exists()


# --- Where per-partition cases come from ---------------------------------------------------------

DOCS = DynamicPartitionsDefinition(name="toy_documents")


@asset(partitions_def=DOCS)
def toy_signals() -> None:
    return None


@asset_check(asset=toy_signals, partitions_def=DOCS, blocking=True, description="This document's signals are valid.")
def toy_valid(context) -> AssetCheckResult:
    partition = context.op_execution_context.partition_key
    return AssetCheckResult(passed=partition != "b.md", description=f"checked {partition}")


@asset_check(asset=toy_signals, blocking=True, description="Most documents' extraction requests succeeded.")
def toy_requests() -> AssetCheckResult:
    failures = [{"document": "b.md", "error": "no answer"}]
    return AssetCheckResult(
        passed=False,
        severity=AssetCheckSeverity.ERROR,
        description="1 of 3 requests failed",
        metadata={"failures": MetadataValue.md(markdown_table(failures))},
    )


@integration
def test_partitioned_check_run_for_one_partition_is_a_case_per_partition_and_a_whole_table_check_is_one():
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(DOCS.name, ["a.md", "b.md", "c.md"])
    job = Definitions(
        assets=[toy_signals], asset_checks=[toy_valid, toy_requests], jobs=[define_asset_job("toy")]
    ).resolve_job_def("toy")
    found: list[CheckCase] = []
    for partition in ("a.md", "b.md"):
        result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False)
        found += check_cases(result, [AssetKey("toy_signals")], instance)

    per_partition = [(c.name, c.status) for c in found if c.check == "toy_valid"]
    assert per_partition == [("toy_valid[a.md]", "passed"), ("toy_valid[b.md]", "failed")]
    whole_table = [c for c in found if c.check == "toy_requests"]
    assert [c.name for c in whole_table] == ["toy_requests", "toy_requests"]  # once per run, never split by document
    assert whole_table[0].failing_partitions == ["b.md"]
    assert whole_table[0].check_description == "Most documents' extraction requests succeeded."


@integration
def test_last_is_the_newest_accepted_check_run_of_its_selection_read_back_from_the_event_log():
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(DOCS.name, ["a.md", "b.md"])
    job = Definitions(
        assets=[toy_signals], asset_checks=[toy_valid, toy_requests], jobs=[define_asset_job("toy")]
    ).resolve_job_def("toy")
    nothing = find_baseline(instance, LAST, "toy_signals")
    assert nothing.run_id is None and "no accepted `ai-pipelines check` run of --select toy_signals yet" in nothing.note

    first = job.execute_in_process(instance=instance, partition_key="a.md", raise_on_error=False)
    accept(instance, first.run_id, "toy_signals")
    second = job.execute_in_process(instance=instance, partition_key="b.md", raise_on_error=False)  # not accepted

    last = find_baseline(instance, LAST, " toy_signals,toy_signals")  # the same selection, spelled otherwise
    assert last.run_id == first.run_id
    live = check_cases(first, [AssetKey("toy_signals")], instance)
    assert [(c.label, c.status) for c in last.cases] == [(c.label, c.status) for c in live if c.evaluated]
    assert sorted((c.label, c.status) for c in last.cases) == [
        ("toy_signals:toy_requests", "failed"),
        ("toy_signals:toy_valid[a.md]", "passed"),
    ]
    assert find_baseline(instance, LAST, "").run_id is None  # accepted for another selection only

    explicit = find_baseline(instance, second.run_id, "")  # any run with check evaluations, accepted or not
    assert explicit.run_id == second.run_id and sorted((c.label, c.status) for c in explicit.cases) == [
        ("toy_signals:toy_requests", "failed"),
        ("toy_signals:toy_valid[b.md]", "failed"),
    ]
    with pytest.raises(BaselineNotFoundError, match="no run 'nope' in the Dagster instance"):
        find_baseline(instance, "nope", "")
    accept(instance, second.run_id, "toy_signals")
    assert find_baseline(instance, LAST, "toy_signals").run_id == second.run_id  # the newest accepted
    unchecked = Definitions(
        assets=[toy_signals],
        asset_checks=[toy_valid, toy_requests],
        jobs=[define_asset_job("unchecked", selection=AssetSelection.assets(toy_signals).without_checks())],
    ).resolve_job_def("unchecked")
    plain = unchecked.execute_in_process(instance=instance, partition_key="a.md")
    with pytest.raises(BaselineNotFoundError, match="evaluated no asset check"):
        find_baseline(instance, plain.run_id, "")


# --- The command on the digest -------------------------------------------------------------------

BROKEN_TITLE = "Helios Grid Wins Storage Contract From Meseta Energia"
BROKEN_DOCUMENT = "corpus/10-helios-grid-meseta-contract.md"


def broken_extraction(messages: list[dict[str, str]]):
    """Every answer for one document is malformed, so its extraction request fails for good."""
    return "{" if BROKEN_TITLE in messages[0]["content"] else extract_signals(messages)


def run_check(workdir: Path, llm: FakeOpenAI, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "AI_PIPELINES_DATA_DIR": str(workdir / "data"),
        "AI_PIPELINES_LLM_BASE_URL": llm.base_url,
        **env,
    }
    environment.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "ai-pipelines"), "check", *args],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeOpenAI):
    """One `check --materialize` with every report, in which one document's signals fail:
    signal_validity (blocking, minimum 0.99) and signal_requests_succeeded (warning, no
    failed request allowed) fail, and the checks downstream of signals are not evaluated."""
    workdir = tmp_path_factory.mktemp("checks")
    fake_llm.reset()
    fake_llm.scripts["ExtractedSignals"] = broken_extraction
    try:
        completed = run_check(
            workdir,
            fake_llm,
            "--materialize",
            "--report",
            "junit",
            "--report-file",
            "reports/checks.xml",
            "--report",
            "json",
            "--report-file",
            "reports/checks.json",
            "--report",
            "markdown",
            AI_PIPELINES_MIN_SIGNAL_VALIDITY="0.99",
            AI_PIPELINES_MAX_FAILED_REQUEST_SHARE="0",
        )
    finally:
        fake_llm.reset()
    return workdir, completed


@integration
def test_junit_report_of_a_failing_materialization_has_a_testcase_per_check(broken_run, llm):
    workdir, completed = broken_run
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert completed.stdout.startswith("### Asset checks: FAILED")  # stdout is the markdown alone ...
    assert "FAIL    ERROR     signals:signal_validity" in completed.stderr  # ... the table went to stderr

    defs = build_definitions(fake_settings(workdir / "data", llm))
    digest = set(defs.resolve_job_def("digest_job").asset_layer.executable_asset_keys)
    graph = defs.resolve_asset_graph()
    specs = {
        (k.asset_key.to_user_string(), k.name): graph.get_check_spec(k)
        for k in graph.asset_check_keys
        if k.asset_key in digest
    }

    suite = ET.parse(workdir / "reports" / "checks.xml").getroot().find("testsuite")
    testcases = {(t.get("classname"), t.get("name")): t for t in suite.iter("testcase")}
    # The digest's checks are evaluated once over every document: one testcase per check, and one
    # per document for signal_validity, which records each document's verdict.
    documents = sorted(r["document"] for r in warehouse_rows(fake_settings(workdir / "data", llm), "signals"))
    assert len(documents) == 30
    per_document = {("signals", f"signal_validity[{d}]") for d in documents}
    assert sorted(testcases) == sorted((set(specs) - {("signals", "signal_validity")}) | per_document)
    assert suite.get("tests") == str(len(specs) - 1 + len(documents))

    for document in documents:
        validity = testcases[("signals", f"signal_validity[{document}]")].find("failure")
        if document != BROKEN_DOCUMENT:
            assert validity is None
            continue
        assert validity.get("type") == "error"
        assert validity.get("message") == specs[("signals", "signal_validity")].description
    requests = testcases[("signals", "signal_requests_succeeded")].find("failure")
    assert requests.get("type") == "warning"
    assert requests.get("message") == specs[("signals", "signal_requests_succeeded")].description
    assert f"failing partitions: {BROKEN_DOCUMENT}" in requests.text  # named in the rows the check recorded
    assert testcases[("fact_checks", "unsupported_share_within_limit")].find("skipped") is not None
    assert testcases[("source_documents", "corpus_parsed")].find("failure") is None
    assert suite.get("failures") == "2"

    report = json.loads((workdir / "reports" / "checks.json").read_text())
    assert report["verdict"] == "failed" and report["run_id"] in completed.stderr
    assert report["totals"]["failed"] == 1 and report["totals"]["warnings"] == 1
    assert report["totals"]["skipped"] == int(suite.get("skipped")) > 0
    assert {c["partition"] for c in report["cases"] if c["check"] == "signal_validity"} == set(documents)
    assert all(c["partition"] is None for c in report["cases"] if c["check"] != "signal_validity")
    parsed = next(c for c in report["cases"] if c["check"] == "corpus_parsed")
    assert (
        parsed["metadata"]["documents"] == 30
        and parsed["check_description"] == specs[("source_documents", "corpus_parsed")].description
    )


@integration
def test_min_pass_rate_fails_the_build_on_warnings_below_the_threshold(broken_run, llm, monkeypatch, capsys):
    """Against the latest materializations of the run above, with the default signal validity
    (29 of 30 documents pass) and no failed request allowed: the broken document's validity case
    and the failed-request check warn, and the rate counts them against the other cases of the
    selection (the corpus check, the other documents' validity cases, the signals' other checks)."""
    workdir, _ = broken_run
    data = workdir / "data"
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    monkeypatch.setenv("AI_PIPELINES_DATA_DIR", str(data))
    monkeypatch.setenv("AI_PIPELINES_LLM_BASE_URL", llm.base_url)
    monkeypatch.setenv("AI_PIPELINES_MAX_FAILED_REQUEST_SHARE", "0")
    select = ["check", "--select", "source_documents,group:signals"]

    assert main([*select, "--report", "json", "--report-file", "totals.json"]) == 0  # a warning alone passes
    report = json.loads((workdir / "totals.json").read_text())
    warned = {(c["check"], c["partition"]) for c in report["cases"] if c["status"] == "warning"}
    assert {("signal_validity", BROKEN_DOCUMENT), ("signal_requests_succeeded", None)} <= warned
    passed, evaluated = report["totals"]["passed"], report["totals"]["evaluated"]
    assert evaluated >= 32 and passed == evaluated - len(warned)
    counted = f"pass rate {passed / evaluated:.1%} ({passed} of {evaluated} evaluated checks passed)"
    capsys.readouterr()

    assert main([*select, "--min-pass-rate", "0.6"]) == 0
    assert f"{counted}, at or above the minimum 60.0%" in capsys.readouterr().out
    above = math.ceil(passed / evaluated * 100) / 100  # the next whole percent above the rate
    assert main([*select, "--min-pass-rate", f"{above}"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {counted} is below the minimum {above:.1%} (--min-pass-rate {above:g})" in out

    monkeypatch.setenv("AI_PIPELINES_MIN_SIGNAL_VALIDITY", "0.99")
    assert main([*select, "--min-pass-rate", "0"]) == 1  # a blocking failure fails it whatever the rate
    monkeypatch.delenv("AI_PIPELINES_MIN_SIGNAL_VALIDITY")
    assert main(["check", "--select", "summaries", "--min-pass-rate", "0"]) == 2  # never materialized: as before
