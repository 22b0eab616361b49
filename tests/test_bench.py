"""The benchmark measures only runs that succeeded: a failed run fails the command."""

import os
import subprocess
import sys
from pathlib import Path

from tests.fake_openai import Fault

ROOT = Path(__file__).parent.parent


def bench(tmp_path: Path, llm) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "AI_PIPELINES_LLM_BASE_URL": llm.base_url,
        "AI_PIPELINES_LLM_FAST_MODEL": "fake-fast",
        "AI_PIPELINES_LLM_STRONG_MODEL": "fake-strong",
        "AI_PIPELINES_CORPUS_DIR": str(ROOT / "tests" / "data" / "external_corpus"),
        "AI_PIPELINES_INBOX_DIR": str(tmp_path / "inbox"),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gateway_cache.py")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600,
    )


def test_a_benchmark_whose_run_fails_exits_non_zero_and_says_why(tmp_path, llm):
    llm.persistent_fault = Fault(status=503)
    result = bench(tmp_path, llm)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "benchmark failed: the run failed" in result.stderr and "MODEL OUTAGE" in result.stderr
    assert "speed-up" not in result.stdout


def test_a_benchmark_of_runs_that_succeed_prints_the_ratio(tmp_path, llm):
    result = bench(tmp_path, llm)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warm run:" in result.stdout and ", 0 model calls" in result.stdout and "speed-up:" in result.stdout
