"""`ai-pipelines run`, as a person runs it: exit code, output locations, and what blocked."""

import os
import subprocess
import sys
from pathlib import Path

from tests.fake_openai import extract_signals

ROOT = Path(__file__).parent.parent


def run_cli(tmp_path, llm, **env):
    cli = Path(sys.executable).parent / "ai-pipelines"
    environment = {
        **os.environ,
        "AI_PIPELINES_DATA_DIR": str(tmp_path / "data"),
        "AI_PIPELINES_LLM_BASE_URL": llm.base_url,
        **env,
    }
    environment.pop("DAGSTER_HOME", None)
    return subprocess.run([str(cli), "run"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)


def test_run_names_where_every_output_lives(tmp_path, llm):
    result = run_cli(tmp_path, llm)
    assert result.returncode == 0, result.stdout + result.stderr
    data = (tmp_path / "data").resolve()
    for asset in ["source_documents", "chunks", "signals", "drafts", "fact_checks", "summaries"]:
        assert f"table ai_pipelines.{asset} in {data / 'warehouse.duckdb'}" in result.stdout
    assert str(data / "chroma") in result.stdout and str(data / "outputs" / "digest.md") in result.stdout
    assert (data / "dagster_home" / "dagster.yaml").exists()


def test_run_exits_non_zero_and_says_which_check_blocked_what(tmp_path, llm):
    llm.scripts["ExtractedSignals"] = lambda m: "{" if "Helios Grid" in m[0]["content"] else extract_signals(m)
    result = run_cli(tmp_path, llm, AI_PIPELINES_MIN_SIGNAL_VALIDITY="0.9")
    assert result.returncode == 1
    assert "BLOCKED: check 'signal_validity' failed on asset 'signals'" in result.stdout
    assert "Not materialized: drafts, fact_checks, summaries" in result.stdout
