"""The benchmark measures only runs that succeeded: a run that fails fails the command,
and its figures are not printed."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def bench(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-m", *arguments],
        cwd=ROOT,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_digest_run_that_fails_exits_non_zero_and_says_why():
    # A token budget too small for the run stops it: the real failure path of a run.
    result = bench("bench.digest_runs", "--documents", "4", "--latency", "0", AI_PIPELINES_LLM_BUDGET_TOKENS="20")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "benchmark failed: the cold run over 4 documents failed" in result.stderr
    assert result.stdout.strip() == ""


def test_the_suite_exits_non_zero_and_leaves_the_failed_scenario_out_of_the_table():
    result = bench(
        "bench", "--documents", "4", "--latency", "0", "--scenarios", "digest", AI_PIPELINES_LLM_BUDGET_TOKENS="20"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 scenario(s) FAILED" in result.stderr and "the cold run over 4 documents failed" in result.stderr
    assert "| overhead |" not in result.stdout and "| unchanged re-run |" not in result.stdout


def test_runs_that_succeed_print_the_table_with_an_unchanged_re_run_of_no_calls():
    result = bench("bench", "--documents", "4,8", "--latency", "0.01", "--scenarios", "digest")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("| ")
    }
    assert "overhead/digest graph, N=8" in rows
    assert ", 0 calls |" in rows["unchanged re-run/N=8"]
    assert "ExtractedSignals 1" in rows["incremental (+1 doc)/N=8"]
    assert "memory/peak RSS, N=8" in rows


def test_the_triage_benchmark_measures_a_run_that_passed_its_checks_and_fails_on_one_that_did_not():
    result = bench("bench.triage_runs", "--tickets", "6", "--latency", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    measured = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert measured["tickets"] == 6 and measured["calls_by_schema"]["TicketScreen"] == 6
    assert sum(measured["replies"].values()) == 6
    failed = bench("bench.triage_runs", "--tickets", "6", "--latency", "0", AI_PIPELINES_LLM_BUDGET_TOKENS="20")
    assert failed.returncode == 1 and "benchmark failed: the triage run over 6 tickets failed" in failed.stderr


def test_the_scale_scenario_exits_non_zero_when_a_run_inside_fails():
    result = bench(
        "bench", "--documents", "4", "--latency", "0", "--scenarios", "scale", AI_PIPELINES_LLM_BUDGET_TOKENS="20"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 scenario(s) FAILED" in result.stderr
    assert "scale over 4 documents: benchmark failed: the cold run over 4 documents failed" in result.stderr
    assert "| scale |" not in result.stdout


def test_the_scale_scenario_times_the_asset_page_on_a_webserver_over_the_runs_instance():
    # Tiny, so only the code path is exercised: the runs, the webserver started and stopped, the query.
    result = bench("bench", "--documents", "4", "--latency", "0.01", "--scenarios", "scale")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("|")[2].strip(): line for line in result.stdout.splitlines() if line.startswith("| scale |")}
    assert ", 0 calls |" in rows["unchanged re-run, N=4"]
    assert "ExtractedSignals 1" in rows["+1 document, N=4"]
    assert "peak RSS of the run process, N=4" in rows
    webserver = rows["webserver: asset page of signals, N=4"]
    assert " s warm (first " in webserver and "dagster-webserver up in" in webserver
    assert "| overhead |" not in result.stdout  # the digest scenario was not asked for


def test_the_routing_scenario_prints_learned_runs_cheaper_than_all_strong_at_the_target():
    result = bench("bench.learned_routing", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("|")[2].strip(): line for line in result.stdout.splitlines() if line.startswith("| routing")}
    assert set(rows) == {f"{way}, 60 items (half hard)" for way in ("all fast", "all strong")} | {
        f"learned, {run} run, 60 items (half hard)" for run in ("first", "second")
    }
    assert "pass rate 0.50" in rows["all fast, 60 items (half hard)"]
    assert all(line.endswith("| yes |") for way, line in rows.items() if way.startswith("learned"))
