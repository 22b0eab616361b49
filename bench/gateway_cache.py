"""Benchmark: the whole graph cold, then re-materialized with unchanged inputs.

Runs both side by side in one process, over every document of the configured corpus,
against the embedded local model (or the endpoint configured in the environment) and
prints the ratio, so the number means the same on a busy shared machine as on a quiet
one. A ratio of runs that failed means nothing: if either run fails, or the unchanged
re-run makes a model call, it says why and exits 1. Usage:

    .venv/bin/python bench/gateway_cache.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance

from ai_pipelines.backfill import run_over_all_documents
from ai_pipelines.definitions import build_definitions, build_resources
from ai_pipelines.report import RunReport
from ai_pipelines.settings import Settings, load_settings


class BenchmarkFailed(RuntimeError):
    pass


def timed_run(settings: Settings, instance: DagsterInstance) -> tuple[float, int]:
    """Wall time and model calls actually sent (cache hits excluded) of one full run."""
    job = build_definitions(settings).resolve_job_def("digest_job")
    started = time.perf_counter()
    result = run_over_all_documents(
        job,
        instance,
        build_resources(settings)["pipeline"],
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    elapsed = time.perf_counter() - started
    report = RunReport.from_result(result, settings)
    if not report.ok:
        raise BenchmarkFailed(f"the run failed, so there is nothing to measure:\n{report.render()}")
    usage = report.model_usage
    return elapsed, usage.requests - usage.cache_hits


def main() -> int:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = load_settings().model_copy(update={"data_dir": Path(data_dir)})
        instance = DagsterInstance.ephemeral()
        try:
            cold, cold_calls = timed_run(settings, instance)
            warm, warm_calls = timed_run(settings, instance)
            if warm_calls:
                raise BenchmarkFailed(f"the unchanged re-run made {warm_calls} model calls; expected 0")
        except BenchmarkFailed as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    print(f"cold run: {cold:7.1f} s, {cold_calls} model calls")
    print(f"warm run: {warm:7.1f} s, {warm_calls} model calls (unchanged inputs, response cache)")
    print(f"speed-up: {cold / warm:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
