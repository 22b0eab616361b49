"""`ai-pipelines check`, as CI runs it: a table of results and an exit code that fails the
build exactly when a blocking check fails, or when a change breaks more than allowed of what
passed in the baseline run."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fake_openai import extract_signals

pytestmark = pytest.mark.integration


def check(tmp_path, llm, *args, **env):
    cli = Path(sys.executable).parent / "ai-pipelines"
    environment = {
        **os.environ,
        "AI_PIPELINES_DATA_DIR": str(tmp_path / "data"),
        "AI_PIPELINES_LLM_BASE_URL": llm.base_url,
        **env,
    }
    environment.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [str(cli), "check", *args], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )


def test_check_passes_then_fails_on_a_blocking_check_against_latest_materializations(tmp_path, llm):
    never = check(tmp_path, llm)
    assert never.returncode == 2 and "never materialized" in never.stderr and "--materialize" in never.stderr

    first = check(tmp_path, llm, "--materialize")
    assert first.returncode == 0, first.stdout + first.stderr
    # 13 checks; signal_validity records each document's verdict: one line per document.
    documents = first.stdout.count("signals:signal_validity[")
    assert documents == 30 and first.stdout.count("PASS  ") == 12 + documents
    assert "0 blocking failures: passed" in first.stdout
    assert " - DEBUG - " not in first.stdout + first.stderr  # the table, not the run log

    # Latest materializations only, nothing re-materialized: a stricter threshold fails the build.
    again = check(tmp_path, llm, "--select", "source_documents,group:signals")
    assert again.returncode == 0 and again.stdout.count("PASS  ") == 3 + 30, again.stdout + again.stderr
    strict = check(tmp_path, llm, "--select", "source_documents", AI_PIPELINES_MAX_QUARANTINE_SHARE="0")
    assert strict.returncode == 1
    assert (
        "FAIL    ERROR     source_documents:corpus_parsed" in strict.stdout and "3 of 33 files failed" in strict.stdout
    )


def test_check_materialize_reports_blocked_checks_and_exits_non_zero(tmp_path, llm):
    llm.scripts["ExtractedSignals"] = lambda m: "{" if "Helios Grid" in m[0]["content"] else extract_signals(m)
    result = check(tmp_path, llm, "--materialize", AI_PIPELINES_MIN_SIGNAL_VALIDITY="0.9")
    assert result.returncode == 1
    assert "FAIL    ERROR     signals:signal_validity" in result.stdout
    assert "SKIP" in result.stdout and "fact_checks:unsupported_share_within_limit" in result.stdout


def test_unknown_selection_is_named(tmp_path, llm):
    result = check(tmp_path, llm, "--select", "signal")
    assert result.returncode == 2 and "no asset named 'signal'" in result.stderr


PROMPT_EDIT = "Write every name exactly as the article spells it, including its capital letters."
BROKEN_TITLE = "Helios Grid Wins Storage Contract From Meseta Energia"
BROKEN_DOCUMENT = "corpus/10-helios-grid-meseta-contract.md"


def checkout(root: Path) -> Path:
    """A copy of the project's packages, like a checkout a person edits: a command run with it
    first on PYTHONPATH imports it, prompts included, rather than the installed tree."""
    for package in ("ai_pipelines", "assets", "resources", "sensors"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def extraction_broken_by_the_edit(messages: list[dict[str, str]]):
    """The model's answer to the edited prompt is malformed for one document, so that document's
    extraction fails; every other answer, and every answer to the old prompt, is as before."""
    prompt = messages[0]["content"]
    return "{" if PROMPT_EDIT in prompt and BROKEN_TITLE in prompt else extract_signals(messages)


def test_a_prompt_edit_that_breaks_one_document_fails_the_baseline_gate_and_leads_the_report(tmp_path, llm):
    project = checkout(tmp_path / "checkout")
    llm.scripts["ExtractedSignals"] = extraction_broken_by_the_edit
    select = ("--select", "group:ingestion,group:signals")

    def run(*args: str) -> subprocess.CompletedProcess:
        return check(tmp_path, llm, *select, *args, PYTHONPATH=str(project))

    first = run("--materialize", "--baseline", "last", "--max-regression", "0")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no baseline: no accepted `ai-pipelines check` run of --select group:ingestion,group:signals yet" in (
        first.stdout
    )
    [accepted] = re.findall(r"\(run ([0-9a-f-]{36})\)", first.stdout)

    prompt = project / "assets" / "digest" / "prompts" / "extract_signals.txt"
    prompt.write_text(prompt.read_text().replace("Extract, as JSON:", f"{PROMPT_EDIT}\nExtract, as JSON:"))
    edited = run("--materialize", "--baseline", "last", "--max-regression", "0", "--report", "markdown")

    assert edited.returncode == 1, edited.stdout + edited.stderr
    markdown = edited.stdout.splitlines()
    assert markdown[:3] == ["### Asset checks: FAILED", "", "#### Regressions"]
    rows = [line for line in markdown if line.startswith("| ") and not line.startswith("| asset")]
    assert rows[0].startswith(f"| signals | signal_validity | {BROKEN_DOCUMENT} | ✅ pass | ")  # listed first
    [gate] = [line for line in markdown if line.startswith("- FAILED:")]
    assert re.fullmatch(
        rf"- FAILED: (\d+) of (\d+) cases that passed in baseline run {accepted} now fail \(\d+\.\d%\), "
        r"more than the maximum 0\.0% \(--max-regression 0\)",
        gate,
    )
    # The regression alone failed the build: no blocking check failed.
    assert not any(line.startswith("- blocking check") for line in markdown)

    # The failed run was not accepted: `last` is still the first run. Named by its id, and with no
    # limit, the same comparison is reported and fails nothing; an unknown id is an error, like an
    # unknown selection.
    again = run("--baseline", accepted)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"REGRESSED  signals:signal_validity[{BROKEN_DOCUMENT}]: passed -> " in again.stdout
    unknown = run("--baseline", "0" * 8)
    assert unknown.returncode == 2 and "no run '00000000' in the Dagster instance" in unknown.stderr
