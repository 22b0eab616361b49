"""The digest at scale, in a process of its own: the digest graph over tens of thousands of
documents cold, re-run unchanged and with one document added (bench/digest_runs.py's runs
and checks, without the scripts' replay), the process's peak RSS over all three, then a
Dagster webserver on the same instance answering the asset page of `signals`.

The webserver is `dagster-webserver` on 127.0.0.1 at a free port, in a process group of its
own, loading the project's workspace.yaml with the run's settings and DAGSTER_HOME; the
group is stopped after, whatever happened. Its first answer to the page's query pays for
cold caches, so the query is timed once as the first request and then again warm.

Any failed run, broken guarantee (a call on the unchanged re-run, more than the new document
re-materialized on +1), webserver that does not start or query that answers with errors
exits 1 with the reason. Usage (from the repository root):

    python -m bench.scale --documents 20000 [--latency 0.1] [--concurrency 16]

It prints one JSON object (`ScaleMeasurements`) on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from bench import digest_runs
from bench.digest_runs import DigestMeasurements
from bench.table import BenchmarkFailed, measurement_parser, print_measurement

if TYPE_CHECKING:
    from ai_pipelines.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ASSET = ["signals"]
WARM_REQUESTS = 3  # after the first; the median is reported
LATEST_EVENTS = 25  # the events list of the asset page
STARTUP_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 600.0

# What the UI's asset page of a partitioned asset asks, in one request: AssetView's
# definition query (the latest materialization, the partition definition, the repository),
# the live data's partition stats, the partition health bar's statuses and keys
# (PartitionHealthQuery), the events list (the latest materializations with their metadata
# labels) and the sidebar's latest materialization of the selected partitions.
ASSET_PAGE_QUERY = """
query SignalsAssetPage($assetKey: AssetKeyInput!, $partitions: [String!], $events: Int!) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset {
      id
      key { path }
      assetMaterializations(limit: 1) { timestamp runId }
      definition {
        id
        groupName
        description
        isMaterializable
        isPartitioned
        jobNames
        partitionDefinition { description dimensionTypes { type dynamicPartitionsDefinitionName } }
        partitionKeysByDimension { name type partitionKeys }
        repository { id name location { id name } }
        partitionStats { numMaterialized numMaterializing numPartitions numFailed }
        assetPartitionStatuses {
          __typename
          ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        }
        assetMaterializations(limit: $events) { partition runId timestamp metadataEntries { label } }
        latestMaterializationByPartition(partitions: $partitions) { partition runId timestamp }
      }
    }
  }
}
"""


class WebserverTiming(BaseModel):
    startup_s: float  # process start to the code location answering
    first_s: float
    warm_s: float  # median of WARM_REQUESTS
    materialized_partitions: int
    partitions: int
    events: int  # materializations in the events list


class ScaleMeasurements(BaseModel):
    digest: DigestMeasurements
    peak_rss_mb: float  # this process over the cold run, the unchanged re-run and +1
    webserver: WebserverTiming


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(port: int, query: str, variables: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def server_environment(settings: Settings, home: Path) -> dict[str, str]:
    """The environment that makes the webserver's code location load as the benchmark's run
    configured it (every setting the benchmark set, as its AI_PIPELINES_ variable) on the
    run's instance; sockets go to the run's temporary folder."""
    from ai_pipelines.settings import env_name

    chosen = settings.model_dump(include=settings.model_fields_set)
    return {
        **os.environ,
        **{env_name(name): str(value) for name, value in chosen.items() if value is not None},
        "DAGSTER_HOME": str(home),
        "TMPDIR": str(home.parent),
        "PYTHONPATH": str(ROOT),
    }


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the webserver's process group (it and its code server), SIGKILL to what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _loaded(port: int) -> bool:
    """Whether the webserver answers and its code location has loaded (it serves before that)."""
    try:
        nodes = graphql(port, "{ assetNodes { id } }", timeout=30).get("data", {}).get("assetNodes")
    except (OSError, ValueError):
        return False
    return bool(nodes)


def _page(port: int, variables: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    try:
        answer = graphql(port, ASSET_PAGE_QUERY, variables, timeout=REQUEST_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        raise BenchmarkFailed(f"the webserver did not answer the asset page of {'/'.join(ASSET)}: {exc}") from exc
    seconds = time.perf_counter() - started
    asset = (answer.get("data") or {}).get("assetOrError") or {}
    if answer.get("errors") or asset.get("__typename") != "Asset" or not asset.get("definition"):
        detail = json.dumps(answer.get("errors") or asset)[:1500]
        raise BenchmarkFailed(f"the asset page query of {'/'.join(ASSET)} failed: {detail}")
    return seconds, asset["definition"]


def time_asset_page(home: Path, settings: Settings) -> WebserverTiming:
    """`dagster-webserver` on `home` and the workspace; the asset page of `signals` timed
    first and warm. The partitions asked for by partition are those of the latest
    materializations, whatever the asset is partitioned by."""
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(AssetKey(ASSET), limit=5).records
    partitions = [r.partition_key for r in records if r.partition_key]
    variables = {"assetKey": {"path": ASSET}, "partitions": partitions, "events": LATEST_EVENTS}
    port = free_port()
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
    command += ["-w", str(ROOT / "workspace.yaml")]
    log = home.parent / "webserver.log"  # a file, not a pipe: a full pipe would stall the server
    started = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=server_environment(settings, home),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while not _loaded(port):
            if process.poll() is not None:
                error = log.read_text(errors="replace")[-1500:]
                raise BenchmarkFailed(f"dagster-webserver exited with {process.returncode}: {error}")
            if time.perf_counter() - started > STARTUP_TIMEOUT_S:
                raise BenchmarkFailed(f"dagster-webserver did not load the workspace in {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        startup = time.perf_counter() - started
        first, definition = _page(port, variables)
        warm = statistics.median(_page(port, variables)[0] for _ in range(WARM_REQUESTS))
    finally:
        stop_group(process)
    stats = definition.get("partitionStats") or {}
    if not stats.get("numMaterialized"):
        raise BenchmarkFailed(f"the asset page of {'/'.join(ASSET)} shows no materialized partition: {stats}")
    return WebserverTiming(
        startup_s=startup,
        first_s=first,
        warm_s=warm,
        materialized_partitions=stats["numMaterialized"],
        partitions=stats.get("numPartitions", 0),
        events=len(definition.get("assetMaterializations") or []),
    )


def measure(documents: int, latency: float, concurrency: int) -> ScaleMeasurements:
    timed: list[tuple[float, WebserverTiming]] = []

    def after(home: Path, settings: Settings) -> None:
        # Peak RSS now, before the webserver: it is the run process's alone.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        timed.append((peak, time_asset_page(home, settings)))

    digest = digest_runs.measure(documents, latency, concurrency, "sqlite", replay_scripts=False, after=after)
    if not timed:
        raise BenchmarkFailed("the webserver was never timed")  # measure() returned early: a bug, not a slow run
    peak, webserver = timed[0]
    return ScaleMeasurements(digest=digest, peak_rss_mb=peak, webserver=webserver)


def main(argv: list[str] | None = None) -> int:
    parser = measurement_parser(__doc__, "--documents", default=20000)
    args = parser.parse_args(argv)
    return print_measurement(lambda: measure(args.documents, args.latency, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
