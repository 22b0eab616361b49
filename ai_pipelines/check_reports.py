"""Check results in the formats CI reads: JUnit XML for test reporters, JSON for scripts,
markdown for a job summary, and the plain table for a person at a terminal.

One case is one verdict Dagster recorded. A check that Dagster evaluated for one
partition (a partitioned check in a single-partition run) is a case named
`check[partition]`; a check evaluated once over the whole table is one case, even on a
partitioned asset. Splitting such a verdict into per-partition passes and failures would
report results no check produced, so the partitions its failing rows name are attached
to that one case instead (`failing_partitions`).

The pass rate counts every evaluated case, warnings included, so that a gate can fail
a build on many non-blocking failures; skipped cases count for nothing.

With a baseline (`check_baselines`), every format leads with what got worse: the markdown
opens with a "Regressions" section, the terminal text with the regressed cases, the JSON
carries a `baseline` object, and JUnit marks each regressed testcase (a `regressed`
property and a first line in its failure text) and each improved one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, JsonValue

from ai_pipelines.check_baselines import (
    BaselineComparison,
    VerdictChange,
    above_max_regression,
    regression_sentence,
)
from ai_pipelines.check_cases import CheckCase

ReportFormat = Literal["junit", "json", "markdown"]
REPORT_FORMATS: tuple[ReportFormat, ...] = ("junit", "json", "markdown")
# A JUnit report on stdout would be mixed with whatever else CI prints; test reporters read files.
DEFAULT_JUNIT_FILE = "check-results.xml"
STDOUT = "-"
NOT_EVALUATED = "not evaluated: an upstream step failed or was blocked"


def metadata_value(value: object) -> JsonValue:
    """A Dagster metadata value's payload as JSON: numbers stay numbers, markdown and text
    stay strings, anything else (a table, a path object) becomes its string."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dict, list)):
        return json.loads(json.dumps(value, default=str))
    return str(value)


_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def _cells(value: JsonValue) -> Iterable[str]:
    """The strings a recorded value holds: itself, the cells of a markdown table in it, and
    the string leaves of a JSON list or object."""
    if isinstance(value, str):
        yield value.strip()
        for line in value.splitlines():
            if line.startswith("|"):
                yield from (c.strip().replace("\\|", "|") for c in _UNESCAPED_PIPE.split(line.strip().strip("|")))
    elif isinstance(value, (dict, list)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _cells(item)


def partitions_named(metadata: dict[str, JsonValue], partition_keys: set[str]) -> list[str]:
    """Partition keys that appear whole in a check's recorded rows (markdown tables or
    JSON lists). Only exact keys count: a cell the check truncated names nothing, and a
    check that records a capped list of rows names no more than it recorded."""
    found: dict[str, None] = {}
    for value in metadata.values():
        for cell in _cells(value):
            if cell in partition_keys:
                found[cell] = None
    return list(found)


class CheckTotals(BaseModel):
    cases: int
    evaluated: int
    passed: int
    failed: int  # blocking failures
    warnings: int  # non-blocking failures
    skipped: int
    pass_rate: float | None  # passed / evaluated; None when nothing was evaluated

    @classmethod
    def of(cls, cases: list[CheckCase]) -> "CheckTotals":
        count = {
            status: sum(c.status == status for c in cases) for status in ("passed", "failed", "warning", "skipped")
        }
        evaluated = len(cases) - count["skipped"]
        return cls(
            cases=len(cases),
            evaluated=evaluated,
            passed=count["passed"],
            failed=count["failed"],
            warnings=count["warning"],
            skipped=count["skipped"],
            pass_rate=round(count["passed"] / evaluated, 4) if evaluated else None,
        )


class CheckReport(BaseModel):
    """What the JSON report holds, and what every other format is rendered from."""

    run_id: str
    verdict: Literal["passed", "failed"]
    run_failed: bool  # a step failed for another reason than a blocking check
    min_pass_rate: float | None = None
    max_regression: float | None = None
    reasons: list[str]  # why the verdict is "failed"; empty when it passed
    totals: CheckTotals
    baseline: BaselineComparison | None = None  # None: no baseline was asked for
    cases: list[CheckCase]

    @classmethod
    def build(
        cls,
        run_id: str,
        cases: list[CheckCase],
        run_failed: bool,
        min_pass_rate: float | None = None,
        baseline: BaselineComparison | None = None,
        max_regression: float | None = None,
    ) -> "CheckReport":
        totals = CheckTotals.of(cases)
        reasons = ["the run failed: a step failed (see the run in the Dagster UI)"] if run_failed else []
        reasons += [
            f"blocking check {c.label} failed" + (f": {c.result_description}" if c.result_description else "")
            for c in cases
            if c.status == "failed"
        ]
        if below_pass_rate(totals, min_pass_rate):
            reasons.append(pass_rate_sentence(totals, min_pass_rate))
        if baseline is not None and above_max_regression(baseline, max_regression):
            reasons.append(regression_sentence(baseline, max_regression))
        return cls(
            run_id=run_id,
            verdict="failed" if reasons else "passed",
            run_failed=run_failed,
            min_pass_rate=min_pass_rate,
            max_regression=max_regression,
            reasons=reasons,
            totals=totals,
            baseline=baseline,
            cases=cases,
        )

    @property
    def ok(self) -> bool:
        return self.verdict == "passed"

    def to_text(self) -> str:
        """The table a person reads at a terminal."""
        width = max([len(c.label) for c in self.cases] + [10])
        lines = self._baseline_text()
        lines.append(f"{'result':<6}  {'severity':<8}  {'check'.ljust(width)}  description")
        for case in sorted(self.cases, key=lambda c: not c.evaluated):  # evaluated first, as they ran
            result = {"passed": "PASS", "failed": "FAIL", "warning": "FAIL", "skipped": "SKIP"}[case.status]
            severity = "" if not case.evaluated else "ERROR" if case.blocking else "WARN"
            description = case.result_description if case.evaluated else NOT_EVALUATED
            if case.failing_partitions:
                description += f" (failing partitions: {', '.join(case.failing_partitions)})"
            lines.append(f"{result:<6}  {severity:<8}  {case.label.ljust(width)}  {description}")
        totals = self.totals
        lines.append(
            f"\n{totals.evaluated} checks evaluated, {totals.failed} blocking failures: "
            f"{'passed' if self.ok else 'FAILED'} (run {self.run_id})"
        )
        if self.min_pass_rate is not None:
            lines.append(pass_rate_sentence(totals, self.min_pass_rate))
        if self.baseline is not None:
            lines.append(regression_sentence(self.baseline, self.max_regression))
        return "\n".join(lines)

    def _baseline_text(self) -> list[str]:
        """Regressions, pass-rate changes and improvements, above the table: what a change broke
        is what its author reads first."""
        baseline = self.baseline
        if baseline is None:
            return []
        if baseline.run_id is None:
            return [regression_sentence(baseline, self.max_regression), ""]
        lines = [regression_sentence(baseline, self.max_regression)]
        lines += [f"REGRESSED  {c.label}: {c.before} -> {c.now}  {c.description}".rstrip() for c in baseline.regressed]
        lines += [
            f"PASS RATE  {c.asset}:{c.check}: {c.before:.1%} -> {c.now:.1%} ({c.change * 100:+.1f} points)"
            for c in baseline.pass_rate_changes
        ]
        lines += [f"IMPROVED   {c.label}: {c.before} -> {c.now}" for c in baseline.improved]
        return [*lines, ""]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one testsuite, one testcase per case (classname the asset, name the
        check). Blocking failures are `failure type="error"`, warnings `failure type="warning"`,
        so reporters count both as failures and a reader can tell them apart."""
        totals = self.totals
        counts = {
            "tests": str(totals.cases),
            "failures": str(totals.failed + totals.warnings),
            "errors": "0",
            "skipped": str(totals.skipped),
        }
        suites = ET.Element("testsuites", {"name": "ai-pipelines check", **counts})
        suite = ET.SubElement(suites, "testsuite", {"name": "asset checks", **counts})
        properties = ET.SubElement(suite, "properties")
        for name, value in (
            ("run_id", self.run_id),
            ("verdict", self.verdict),
            ("pass_rate", totals.pass_rate),
            ("min_pass_rate", self.min_pass_rate),
            *self._baseline_properties(),
        ):
            if value is not None:
                ET.SubElement(properties, "property", name=name, value=str(value))
        changes = self._changes_by_label()
        for case in self.cases:
            testcase = ET.SubElement(suite, "testcase", classname=case.asset, name=case.name)
            change = changes.get(case.label)
            if change is not None:  # a regression or an improvement against the baseline
                kind, before = change
                case_properties = ET.SubElement(testcase, "properties")
                ET.SubElement(
                    case_properties, "property", name=kind, value=f"{before} in baseline run {self._baseline_id}"
                )
            if case.status == "skipped":
                ET.SubElement(testcase, "skipped", message=NOT_EVALUATED)
                continue
            if case.status in ("failed", "warning"):
                failure = ET.SubElement(
                    testcase,
                    "failure",
                    message=_xml_text(case.check_description or case.result_description or "check failed"),
                    type="error" if case.status == "failed" else "warning",
                )
                prefix = ""
                if change is not None and change[0] == "regressed":
                    prefix = f"REGRESSED: {case.status}, {change[1]} in baseline run {self._baseline_id}\n"
                failure.text = _xml_text(prefix + case.details)
            elif case.result_description:
                ET.SubElement(testcase, "system-out").text = _xml_text(case.result_description)
        ET.indent(suites)
        return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"

    @property
    def _baseline_id(self) -> str:
        return (self.baseline.run_id or "") if self.baseline is not None else ""

    def _baseline_properties(self) -> list[tuple[str, object]]:
        baseline = self.baseline
        if baseline is None:
            return []
        if baseline.run_id is None:
            return [("baseline", f"none: {baseline.note}")]
        return [
            ("baseline_run_id", baseline.run_id),
            ("regressed", len(baseline.regressed)),
            ("improved", len(baseline.improved)),
            ("regression_share", baseline.regression_share),
            ("max_regression", self.max_regression),
        ]

    def _changes_by_label(self) -> dict[str, tuple[str, str]]:
        """Each changed case's label: ("regressed" or "improved", its status in the baseline)."""
        if self.baseline is None:
            return {}
        return {
            **{c.label: ("improved", c.before) for c in self.baseline.improved},
            **{c.label: ("regressed", c.before) for c in self.baseline.regressed},
        }

    def to_markdown(self) -> str:
        """A job summary: the verdict, the totals, then one row per case, failures first."""
        totals = self.totals
        rate = f"{totals.pass_rate:.1%}" if totals.pass_rate is not None else "n/a"
        minimum = f" (minimum {self.min_pass_rate:.1%})" if self.min_pass_rate is not None else ""
        lines = [
            f"### Asset checks: {'passed' if self.ok else 'FAILED'}",
            "",
            *self._baseline_markdown(),
            f"Run `{self.run_id}`: {totals.evaluated} evaluated ({totals.passed} passed, {totals.failed} failed and "
            f"blocking, {totals.warnings} warned), {totals.skipped} not evaluated; pass rate {rate}{minimum}.",
            "",
        ]
        lines += [f"- {reason}" for reason in self.reasons]
        lines += ["", "| result | severity | asset | check | partition | description |", "|---|---|---|---|---|---|"]
        order = {"failed": 0, "warning": 1, "skipped": 2, "passed": 3}
        for case in sorted(self.cases, key=lambda c: order[c.status]):
            result = _STATUS_CELL[case.status]
            severity = "" if not case.evaluated else "ERROR" if case.blocking else "WARN"
            description = case.result_description if case.evaluated else NOT_EVALUATED
            if case.failing_partitions:
                description += f"; failing partitions: {', '.join(case.failing_partitions)}"
            row = [result, severity, case.asset, case.check, case.partition or "", description]
            lines.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
        return "\n".join(lines) + "\n"

    def _baseline_markdown(self) -> list[str]:
        """The "Regressions" section, at the top: regressed cases (partitions first), then
        pass-rate changes per check, then improvements."""
        baseline = self.baseline
        if baseline is None:
            return []
        if baseline.run_id is None:
            return ["#### Regressions", "", f"No baseline: {baseline.note}.", ""]
        lines = ["#### Regressions", "", f"{regression_sentence(baseline, self.max_regression)}.", ""]
        header = ["| asset | check | partition | baseline | now | description |", "|---|---|---|---|---|---|"]
        if baseline.regressed:
            lines += header + [_change_row(c) for c in baseline.regressed] + [""]
        if baseline.pass_rate_changes:
            lines += ["Pass-rate changes:", "", "| asset | check | baseline | now | change |", "|---|---|---|---|---|"]
            lines += [
                f"| {_md_cell(c.asset)} | {_md_cell(c.check)} | {c.before:.1%} ({c.before_passed} of "
                f"{c.before_evaluated}) | {c.now:.1%} ({c.now_passed} of {c.now_evaluated}) | "
                f"{c.change * 100:+.1f} points |"
                for c in baseline.pass_rate_changes
            ]
            lines.append("")
        if baseline.improved:
            lines += ["Improvements:", "", *header, *(_change_row(c) for c in baseline.improved), ""]
        return lines

    def render(self, report_format: ReportFormat) -> str:
        return {"junit": self.to_junit, "json": self.to_json, "markdown": self.to_markdown}[report_format]()


def below_pass_rate(totals: CheckTotals, min_pass_rate: float | None) -> bool:
    # Nothing evaluated is not a low pass rate: a failed run or blocked checks say so on their own.
    # The exact share, not the rounded one, with room for 0.9 read as 0.90000000000000002.
    if min_pass_rate is None or not totals.evaluated:
        return False
    return totals.passed / totals.evaluated + 1e-9 < min_pass_rate


def pass_rate_sentence(totals: CheckTotals, min_pass_rate: float | None) -> str:
    if totals.pass_rate is None:
        return "pass rate n/a: no check was evaluated"
    rate = f"pass rate {totals.pass_rate:.1%} ({totals.passed} of {totals.evaluated} evaluated checks passed)"
    if min_pass_rate is None:
        return rate
    if below_pass_rate(totals, min_pass_rate):
        return f"FAILED: {rate} is below the minimum {min_pass_rate:.1%} (--min-pass-rate {min_pass_rate:g})"
    return f"{rate}, at or above the minimum {min_pass_rate:.1%}"


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """XML 1.0 cannot hold most control characters, and document text can."""
    return _XML_INVALID.sub("\ufffd", text)


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


_STATUS_CELL = {"passed": "✅ pass", "failed": "❌ fail", "warning": "⚠️ warn", "skipped": "⏭️ skip"}


def _change_row(change: VerdictChange) -> str:
    row = [
        change.asset,
        change.check,
        change.partition or "",
        _STATUS_CELL[change.before],
        _STATUS_CELL[change.now],
        change.description,
    ]
    return "| " + " | ".join(_md_cell(cell) for cell in row) + " |"


class ReportTarget(BaseModel):
    format: ReportFormat
    path: str = STDOUT  # STDOUT ("-") or a file

    @property
    def to_stdout(self) -> bool:
        return self.path == STDOUT


def parse_report_format(value: str) -> tuple[str, str | None]:
    """`--report FORMAT`: the format, with no file named yet (`--report-file` may name it)."""
    if value not in REPORT_FORMATS:
        raise argparse.ArgumentTypeError(f"unknown report format {value!r} (one of {', '.join(REPORT_FORMATS)})")
    return value, None


class ReportFileAction(argparse.Action):
    """`--report-file PATH` names the file of the `--report FORMAT` just before it, so that
    one run can write several reports, each where CI expects it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        reports = getattr(namespace, "report", None) or []
        if not reports or reports[-1][1] is not None:
            parser.error("--report-file PATH comes right after the --report FORMAT whose file it names")
        reports[-1] = (reports[-1][0], values)


def parse_pass_rate(value: str) -> float:
    """`--min-pass-rate`: a share of evaluated checks, 0 to 1."""
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a share between 0 and 1")
    return rate


def report_targets(reports: list[tuple[str, str | None]]) -> list[ReportTarget]:
    """Where each report goes: the file its `--report-file` named, else DEFAULT_JUNIT_FILE
    for JUnit and stdout for the others. Reports on stdout cannot share it, so at most one
    may go there."""
    targets = [
        ReportTarget(format=fmt, path=path or (DEFAULT_JUNIT_FILE if fmt == "junit" else STDOUT))  # type: ignore[arg-type]
        for fmt, path in reports
    ]
    if sum(t.to_stdout for t in targets) > 1:
        raise ValueError("only one report can go to stdout; name a file for the others (--report-file PATH after each)")
    return targets


def write_report(report: CheckReport, target: ReportTarget) -> None:
    """Write one report. A markdown file is appended to, as GitHub's $GITHUB_STEP_SUMMARY
    expects; JUnit and JSON files are one document each and are replaced."""
    text = report.render(target.format)
    if target.to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(target.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if target.format == "markdown" else "w", encoding="utf-8") as handle:
        handle.write(text)
