"""The support-triage pipeline over N tickets, in a process of its own: tickets per minute
through screening, routing, context, the reply agent, refinement, checks and delivery.

The bundled tickets are copied (with new ids) up to N, so the mix of routes stays the
bundled one: agents on billing and account tickets, orchestrator-worker on multi-part
ones, votes where the classifier is unsure. The model is the test server in a process
of its own, answering every chat call after a fixed latency. The ideal is the calls
made times the latency over the gateway's concurrency: what the physical limit of the
model would allow if orchestration cost nothing and every call could overlap.

The run is executed on the instance `ai-pipelines triage` runs on: a Dagster home with the
project's dagster.yaml (SQLite storage, its event log through pooled connections), as the
digest scenario does. Dagster's in-memory instance, a testing aid no user runs, spends
about three times as long on each of the run's per-ticket events (a planned and a
materialization event per ticket and asset), which it would count against the pipeline.

The run is checked before it is measured: it must succeed with every blocking check
passing, and the gateway must have sent exactly the calls the server answered.
Usage: python -m bench.triage_runs --tickets 200 [--latency 0.1] [--concurrency 16]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from bench.bench_settings import bench_settings
from bench.table import BenchmarkFailed, measurement_parser, print_measurement


class TriageMeasurements(BaseModel):
    tickets: int
    latency_s: float
    concurrency: int
    seconds: float
    calls: int
    calls_by_schema: dict[str, int]
    replies: dict[str, int]


def write_tickets(folder: Path, count: int) -> None:
    """`count` tickets: the bundled ones, then copies of them under new ids and with a reference line."""
    from resources.pipeline_config import SUPPORT_DESK_DIR

    bundled = sorted((SUPPORT_DESK_DIR / "tickets").glob("*.json"))
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        ticket = json.loads(bundled[index % len(bundled)].read_text(encoding="utf-8"))
        copy = index // len(bundled)
        if copy:  # its own id and wording, so no prompt of a copy is answered from the cache
            ticket["ticket_id"] = f"{ticket['ticket_id']}-{copy}"
            ticket["body"] += f"\n\n(Follow-up {copy}, reference {ticket['ticket_id']}.)"
        (folder / f"{ticket['ticket_id']}.json").write_text(json.dumps(ticket), encoding="utf-8")


def measure(tickets: int, latency: float, concurrency: int) -> TriageMeasurements:
    from dagster import DagsterInstance

    from ai_pipelines.definitions import build_definitions, build_resources
    from ai_pipelines.instance import instance_yaml, pool_connections
    from ai_pipelines.run_logging import console_logging
    from ai_pipelines.run_report import ModelUsage
    from ai_pipelines.triage_run import TriageReport, run_triage
    from tests.fake_openai import RemoteFakeOpenAI

    with tempfile.TemporaryDirectory(prefix="bench-triage-") as folder, RemoteFakeOpenAI(latency) as llm:
        root = Path(folder)
        write_tickets(root / "tickets", tickets)
        settings = bench_settings(
            root, llm.base_url, concurrency, tickets_dir=root / "tickets", ticket_inbox_dir=root / "inbox"
        )
        home = root / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(instance_yaml(home), encoding="utf-8")
        instance = DagsterInstance.from_config(str(home))
        pool_connections(instance)
        defs = build_definitions(settings)
        triage = build_resources(settings)["triage"]
        try:
            started = time.perf_counter()
            _, result = run_triage(defs, instance, triage, raise_on_error=False, run_config=console_logging("ERROR"))
            seconds = time.perf_counter() - started
        finally:
            instance.dispose()  # before the home goes
        if result is None:
            raise BenchmarkFailed("nothing to triage")
        report = TriageReport.from_result(result)
        if not report.ok:
            raise BenchmarkFailed(f"the triage run over {tickets} tickets failed:\n{report.render()}")
        calls = llm.calls
        usage = ModelUsage.of_run(result)  # each partition's own calls, each asset's measuring once
        sent = usage.requests - usage.cache_hits
        chat = [c for c in calls if c["schema"]]
        if sent != len(chat):
            raise BenchmarkFailed(f"the gateway accounted {sent} requests, the server answered {len(chat)} chat calls")
        return TriageMeasurements(
            tickets=tickets,
            latency_s=latency,
            concurrency=concurrency,
            seconds=seconds,
            calls=len(chat),
            calls_by_schema=dict(Counter(c["schema"] for c in chat)),
            replies=report.replies,
        )


def main(argv: list[str] | None = None) -> int:
    parser = measurement_parser(__doc__, "--tickets", required=True)
    args = parser.parse_args(argv)
    return print_measurement(lambda: measure(args.tickets, args.latency, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
