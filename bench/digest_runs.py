"""One corpus size, in a process of its own: the digest graph cold, re-run unchanged,
re-run with one document added, then the same model calls replayed without Dagster.

A process per size keeps the measurements apart: peak RSS is this size's alone, and no
cache (vectors, responses, Dagster's own) carries over from another size. The model is
the fault-injecting test server, in a process of its own, answering every chat call
after a fixed latency, with its hashed bag-of-words embeddings, so neither model nor
embedder is the bottleneck and the wall time above `calls x latency / concurrency` is
the orchestration's own.

Every run is checked before it is measured: it must succeed with every blocking check
passing, the gateway must have sent exactly the calls the server answered, the cold run
must extract signals once per document, the unchanged re-run must make no call and the
incremental run must extract signals for the new document only. Otherwise this exits 1
with the reason. Usage (from the repository root):

    python -m bench.digest_runs --documents 500 [--latency 0.1] [--concurrency 16]
        [--instance sqlite|postgres|dagster-default] [--cold-only]

It prints one JSON object (`DigestMeasurements`) on stdout.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from pydantic import BaseModel

from bench.bench_settings import bench_settings
from bench.corpus import write_corpus
from bench.table import BenchmarkFailed, measurement_parser, print_measurement

if TYPE_CHECKING:
    from ai_pipelines.settings import Settings

STARTED = time.perf_counter()
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SEQUENTIAL_SAMPLE = (
    300  # calls the sequential script times; beyond that its time is scaled (it is linear by construction)
)


class GraphRun(BaseModel):
    seconds: float
    calls: int
    calls_by_schema: dict[str, int]
    documents: int  # documents partitions the run materialized
    plan: str


class DigestMeasurements(BaseModel):
    documents: int
    latency_s: float
    concurrency: int
    instance: str
    startup_s: float  # imports, definitions, instance
    cold: GraphRun
    peak_rss_mb: float  # after the cold run, before anything else
    # None with --cold-only
    unchanged: GraphRun | None = None
    incremental: GraphRun | None = None
    sequential_s: float | None = None
    sequential_timed_calls: int | None = None
    asyncio_s: float | None = None


INSTANCES = {
    "sqlite": "the embedded instance `ai-pipelines run` configures (pooled SQLite event log, batched writes)",
    "postgres": "a Postgres instance (the production storage), pooled connections, batched writes",
    "dagster-default": "Dagster's default SQLite storage, one write per event (what a new home had before)",
}


@contextlib.contextmanager
def _dagster_home(root: Path, instance: str) -> Iterator[Path]:
    """A Dagster home for one kind of instance; a Postgres database made for it is dropped after."""
    from ai_pipelines.instance import EVENT_BATCH_VARIABLE, instance_yaml

    home = root / "dagster_home"
    home.mkdir()
    config = instance_yaml(home) if instance == "sqlite" else "telemetry:\n  enabled: false\n"
    database = f"bench_{os.getpid()}_{int(time.time())}" if instance == "postgres" else ""
    if database:
        subprocess.run(
            ["psql", POSTGRES_ADMIN_URL, "-qc", f"create database {database}"], check=True, capture_output=True
        )
        config += f"storage:\n  postgres:\n    postgres_url: postgresql+psycopg2://postgres@127.0.0.1:5432/{database}\n"
    if instance == "dagster-default":
        os.environ[EVENT_BATCH_VARIABLE] = "0"
    (home / "dagster.yaml").write_text(config)
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        yield home
    finally:
        if database:
            subprocess.run(
                ["psql", POSTGRES_ADMIN_URL, "-qc", f"drop database if exists {database} with (force)"],
                capture_output=True,
            )


def measure(
    documents: int,
    latency: float,
    concurrency: int,
    instance_kind: str,
    cold_only: bool = False,
    replay_scripts: bool = True,
    after: Callable[[Path, Settings], None] | None = None,
) -> DigestMeasurements:
    """The runs above, checked. `replay_scripts=False` leaves out the scripts' replay (minutes at
    tens of thousands of calls, and not what a scale run asks). `after(home, settings)` is
    called once the runs are measured, while the Dagster home, the corpus and the test
    server are still there, so that another measurement (the scale scenario's webserver)
    can read the very instance the runs wrote."""
    from dagster import DagsterInstance

    from ai_pipelines.backfill import run_what_changed
    from ai_pipelines.definitions import build_definitions, build_resources
    from ai_pipelines.instance import pool_connections
    from ai_pipelines.run_logging import console_logging
    from ai_pipelines.run_report import RunReport
    from bench import replay
    from tests.fake_openai import RemoteFakeOpenAI

    with (
        tempfile.TemporaryDirectory(prefix="bench-") as folder,
        RemoteFakeOpenAI(latency) as llm,
        contextlib.ExitStack() as cleanup,
    ):
        root = Path(folder)
        corpus = root / "corpus"
        write_corpus(corpus, documents)
        home = cleanup.enter_context(_dagster_home(root, instance_kind))
        settings = bench_settings(root, llm.base_url, concurrency, corpus_dir=corpus, inbox_dir=root / "inbox")
        instance = DagsterInstance.get()
        cleanup.callback(instance.dispose)  # before the home (and its database) goes
        pool_connections(instance)
        defs = build_definitions(settings)
        pipeline = build_resources(settings)["pipeline"]
        startup = time.perf_counter() - STARTED

        def run(label: str) -> tuple[GraphRun, list[dict]]:
            before = len(llm.calls)
            started = time.perf_counter()
            plan, result = run_what_changed(
                defs, instance, pipeline, raise_on_error=False, run_config=console_logging("ERROR")
            )
            seconds = time.perf_counter() - started
            calls = llm.calls[before:]
            if result is not None:
                report = RunReport.from_result(result, settings)
                if not report.ok:
                    raise BenchmarkFailed(f"the {label} run over {documents} documents failed:\n{report.render()}")
                sent = report.model_usage.requests - report.model_usage.cache_hits
                if sent != len(calls):
                    raise BenchmarkFailed(
                        f"the {label} run: the gateway accounted {sent} calls, the server answered {len(calls)}"
                    )
            by_schema = dict(Counter(c["schema"] for c in calls))
            return GraphRun(
                seconds=seconds,
                calls=len(calls),
                calls_by_schema=by_schema,
                documents=len(plan.documents),
                plan=plan.reason,
            ), calls

        cold, cold_calls = run("cold")
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if cold.calls_by_schema.get("ExtractedSignals", 0) != documents:
            raise BenchmarkFailed(
                f"the cold run extracted signals {cold.calls_by_schema.get('ExtractedSignals', 0)} times for {documents} documents"
            )
        measured = DigestMeasurements(
            documents=documents,
            latency_s=latency,
            concurrency=concurrency,
            instance=instance_kind,
            startup_s=startup,
            cold=cold,
            peak_rss_mb=peak_rss_mb,
        )
        if cold_only:
            return measured
        unchanged, _ = run("unchanged")
        if unchanged.calls or unchanged.documents:
            raise BenchmarkFailed(
                f"the unchanged re-run made {unchanged.calls} model calls over {unchanged.documents} documents; expected none"
            )
        write_corpus(corpus, 1, start=documents)
        incremental, _ = run("incremental")
        if incremental.documents != 1 or incremental.calls_by_schema.get("ExtractedSignals", 0) != 1:
            raise BenchmarkFailed(
                f"adding one document re-materialized {incremental.documents} documents and extracted signals "
                f"{incremental.calls_by_schema.get('ExtractedSignals', 0)} times; expected 1 and 1"
            )
        measured = measured.model_copy(update={"unchanged": unchanged, "incremental": incremental})
        if after is not None:
            after(home, settings)
        if not replay_scripts:
            return measured
        timed = cold_calls[:SEQUENTIAL_SAMPLE]
        sequential = replay.sequential(llm.base_url, timed) * len(cold_calls) / max(1, len(timed))
        concurrent = replay.concurrent(llm.base_url, cold_calls, concurrency)
        return measured.model_copy(
            update={
                "sequential_s": sequential,
                "sequential_timed_calls": len(timed),
                "asyncio_s": concurrent,
            }
        )


def main(argv: list[str] | None = None) -> int:
    parser = measurement_parser(__doc__, "--documents", required=True)
    parser.add_argument(
        "--instance",
        choices=sorted(INSTANCES),
        default="sqlite",
        help="; ".join(f"{k}: {v}" for k, v in INSTANCES.items()),
    )
    parser.add_argument("--cold-only", action="store_true", help="Only the cold run (no re-runs, no replay).")
    args = parser.parse_args(argv)
    return print_measurement(
        lambda: measure(args.documents, args.latency, args.concurrency, args.instance, args.cold_only)
    )


if __name__ == "__main__":
    sys.exit(main())
