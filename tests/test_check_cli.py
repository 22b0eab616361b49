"""`ai-pipelines check`, as CI runs it: a table of results and an exit code that fails the
build exactly when a blocking check fails."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    # 12 checks; signal_validity records each document's verdict: one line per document.
    documents = first.stdout.count("signals:signal_validity[")
    assert documents == 30 and first.stdout.count("PASS  ") == 11 + documents
    assert "0 blocking failures: passed" in first.stdout
    assert " - DEBUG - " not in first.stdout + first.stderr  # the table, not the run log

    # Latest materializations only, nothing re-materialized: a stricter threshold fails the build.
    again = check(tmp_path, llm, "--select", "source_documents,group:signals")
    assert again.returncode == 0 and again.stdout.count("PASS  ") == 2 + 30, again.stdout + again.stderr
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
