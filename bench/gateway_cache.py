"""Benchmark: the whole graph cold, then re-materialized with unchanged inputs.

Runs both side by side in one process against the embedded local model (or the
endpoint configured in the environment) and prints the ratio, so the number means
the same on a busy shared machine as on a quiet one. Usage:

    .venv/bin/python bench/gateway_cache.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance

from ai_pipelines.definitions import build_definitions
from ai_pipelines.settings import load_settings


def timed_run(settings) -> tuple[float, int]:
    job = build_definitions(settings).resolve_job_def("digest_job")
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    elapsed = time.perf_counter() - started
    calls = 0
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if "model_calls" in metadata:
            calls += int(metadata["model_calls"].value) - int(metadata["cache_hits"].value)
    return elapsed, calls


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = load_settings().model_copy(update={"data_dir": Path(data_dir)})
        cold, cold_calls = timed_run(settings)
        warm, warm_calls = timed_run(settings)
    print(f"cold run: {cold:7.1f} s, {cold_calls} model calls")
    print(f"warm run: {warm:7.1f} s, {warm_calls} model calls (unchanged inputs, response cache)")
    print(f"speed-up: {cold / warm:5.1f}x")


if __name__ == "__main__":
    main()
