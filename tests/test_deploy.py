"""The production deployment against the real services on this machine: Postgres instance
storage (a throwaway database per test), the webserver and daemon started by
`ai-pipelines stack`, runs launched through GraphQL and held to the queue's limit, and a
restart in the middle of the queue.

Tier: services (PostgreSQL; RabbitMQ for celery; a Chroma server, which the test starts itself),
marked per test; the check that the stack names what it is missing needs no server."""

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster_graphql import DagsterGraphQLClient

from ai_pipelines.stack import prepare_home
from assets.components.partitions import DOCUMENTS
from resources.documents.batches import batch_of, batches_of
from tests.conftest import (
    BIN,
    CLI,
    ROOT,
    answering_server,
    free_port,
    graphql,
    run_digest_job,
    server_environment,
)
from tests.fake_openai import Fault

DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@pytest.fixture
def prod(settings, postgres_url, monkeypatch, tmp_path):
    """Settings and a Dagster home for the production instance in deploy/dagster.yaml."""
    prod_settings = settings.model_copy(update={"postgres_url": postgres_url, "max_concurrent_runs": 2})
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home_prod"))
    monkeypatch.setenv("AI_PIPELINES_POSTGRES_URL", postgres_url)
    monkeypatch.setenv("AI_PIPELINES_MAX_CONCURRENT_RUNS", "2")
    return prod_settings, prepare_home(prod_settings)


def query(url: str, sql: str, *params) -> list[tuple]:
    with psycopg2.connect(url.replace("+psycopg2", "")) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@pytest.mark.services
def test_graph_materializes_with_postgres_instance_storage(prod):
    settings, home = prod
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = run_digest_job(settings, instance)
    assert result.success
    url = settings.postgres_url
    assert query(url, "select status from runs where run_id = %s", result.run_id) == [("SUCCESS",)]
    [(events,)] = query(url, "select count(*) from event_logs where run_id = %s", result.run_id)
    [(materializations,)] = query(
        url,
        "select count(*) from event_logs where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'",
        result.run_id,
    )
    assert events > 100 and materializations >= 8
    # The gateway's state lives with the instance: every call traced, every answer cached.
    [(traces,)] = query(url, "select count(*) from ai_pipelines.traces where run_id = %s", result.run_id)
    [(cached,)] = query(url, "select count(*) from ai_pipelines.responses")
    assert traces > 30 and cached > 30


class StackProcess:
    """`ai-pipelines stack` in its own process group, as an operator would run it."""

    def __init__(self, settings, home: Path, tmp_path: Path, max_concurrent_runs: int, celery_workers: int = 0):
        self.port = free_port()
        self.celery_workers = celery_workers
        self.env = {
            **server_environment(settings, home, tmp_path),
            "AI_PIPELINES_POSTGRES_URL": settings.postgres_url,
            "AI_PIPELINES_MAX_CONCURRENT_RUNS": str(max_concurrent_runs),
            "AI_PIPELINES_EXECUTOR": "celery" if celery_workers else "in_process",
        }
        self.log = tmp_path / f"stack-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "StackProcess":
        self.process = subprocess.Popen(
            [
                str(CLI),
                "stack",
                "--port",
                str(self.port),
                "--drain-seconds",
                "120",
                "--celery-workers",
                str(self.celery_workers),
            ],
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        client = None
        while client is None:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the stack's webserver did not answer in time"
            try:
                client = DagsterGraphQLClient("127.0.0.1", port_number=self.port)
                client._get_repo_locations_and_names_with_pipeline("document_job")
            except Exception:
                client = None
                time.sleep(1)
        self.client = client
        return self

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=240)
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def launch(self, document: str) -> str:
        """A document_job run over the document's batch."""
        return self.client.submit_job_execution("document_job", tags={"dagster/partition": batch_of(document)})


def document_keys(instance: DagsterInstance, n: int) -> list[str]:
    keys = [
        f"corpus/{name}"
        for name in sorted(p.name for p in (ROOT / "resources" / "documents" / "sample_corpus").iterdir())[:n]
    ]
    instance.add_dynamic_partitions(DOCUMENTS.name, keys)
    return keys


def watch(instance: DagsterInstance, run_ids: list[str], timeout: float = 420) -> int:
    """Poll until every run has ended; the most runs seen in progress at once."""
    most = 0
    deadline = time.monotonic() + timeout
    while True:
        records = instance.get_run_records(RunsFilter(run_ids=run_ids))
        most = max(most, sum(r.dagster_run.status == DagsterRunStatus.STARTED for r in records))
        if all(r.dagster_run.status in DONE for r in records):
            return most
        assert time.monotonic() < deadline, {r.dagster_run.run_id: r.dagster_run.status for r in records}
        time.sleep(0.5)


def overlap(instance: DagsterInstance, run_ids: list[str]) -> int:
    """The most runs whose start..end intervals (from the run storage) overlap at one time."""
    records = instance.get_run_records(RunsFilter(run_ids=run_ids))
    edges = sorted(
        [(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records], key=lambda e: (e[0], e[1])
    )
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.mark.services
def test_runs_launched_through_graphql_respect_the_concurrency_limit(prod, tmp_path, llm):
    settings, home = prod
    llm.persistent_fault = Fault(status=0, delay_seconds=3)  # every answer takes 3 s, so runs overlap
    stack = StackProcess(settings, home, tmp_path, max_concurrent_runs=2).start()
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            # Three runs for a limit of two: one waits in the queue while two run side by side.
            run_ids = [stack.launch(key) for key in document_keys(instance, 3)]
            most_seen = watch(instance, run_ids)
            statuses = {r.dagster_run.status for r in instance.get_run_records(RunsFilter(run_ids=run_ids))}
            assert statuses == {DagsterRunStatus.SUCCESS}
            assert most_seen <= 2 and overlap(instance, run_ids) == 2
    finally:
        assert stack.stop() == 0


@pytest.mark.services
def test_restarting_webserver_and_daemon_mid_queue_loses_no_run(prod, tmp_path, llm):
    settings, home = prod
    llm.persistent_fault = Fault(status=0, delay_seconds=3)
    stack = StackProcess(settings, home, tmp_path, max_concurrent_runs=1).start()
    with DagsterInstance.from_config(str(home)) as instance:
        # One run at a time: while the first runs, the other two wait in the queue across the restart.
        run_ids = [stack.launch(key) for key in document_keys(instance, 3)]
        deadline = time.monotonic() + 180
        while not any(
            r.dagster_run.status == DagsterRunStatus.STARTED
            for r in instance.get_run_records(RunsFilter(run_ids=run_ids))
        ):
            assert time.monotonic() < deadline, "no run started"
            time.sleep(0.5)
        assert stack.stop() == 0  # stops the daemon, lets the run in progress finish, then the rest
        between = {
            r.dagster_run.run_id: r.dagster_run.status for r in instance.get_run_records(RunsFilter(run_ids=run_ids))
        }
        assert DagsterRunStatus.QUEUED in between.values(), between
        assert not {DagsterRunStatus.STARTED, DagsterRunStatus.STARTING} & set(between.values()), between

        restarted = StackProcess(settings, home, tmp_path, max_concurrent_runs=1).start()
        try:
            watch(instance, run_ids)
            final = {r.dagster_run.status for r in instance.get_run_records(RunsFilter(run_ids=run_ids))}
            assert final == {DagsterRunStatus.SUCCESS}
        finally:
            assert restarted.stop() == 0


@pytest.mark.services
def test_steps_execute_on_celery_workers_through_rabbitmq(prod, rabbitmq, tmp_path):
    settings, home = prod
    stack = StackProcess(settings, home, tmp_path, max_concurrent_runs=2, celery_workers=1).start()
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            [key] = document_keys(instance, 1)
            run_id = stack.launch(key)
            watch(instance, [run_id])
            assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
            logs = instance.all_logs(run_id)
            run_pid = next(
                e.dagster_event.pid
                for e in logs
                if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RUN_START
            )
            submitted = {e.step_key for e in logs if e.user_message.startswith("Submitting celery task")}
            step_pids = {
                e.step_key: e.dagster_event.pid
                for e in logs
                if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START
            }
            # While the worker still runs: the processes that executed the steps are celery's.
            commands = {
                pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                for pid in set(step_pids.values())
            }
    finally:
        assert stack.stop() == 0
    steps = {
        "source_documents",
        "source_documents_corpus_parsed",
        "chunks",
        "chunks_every_document_chunked",
        "signals",
        "signals_signal_validity",
        "signals_signal_requests_succeeded",
        "signals_signal_consistency",
    }
    assert submitted == steps and set(step_pids) == steps
    assert run_pid not in commands
    assert all("celery" in command and "worker" in command for command in commands.values()), commands


@pytest.fixture
def chroma_server(tmp_path):
    """A real Chroma server (chromadb's own `chroma run`) on 127.0.0.1."""
    port = free_port()

    def answers() -> bool:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2).close()
        return True

    with answering_server(
        [
            str(BIN / "chroma"),
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--path",
            str(tmp_path / "chroma_server"),
        ],
        answers,
        "chroma server",
        timeout=60,
        interval=0.5,
    ):
        yield port


@pytest.mark.services
def test_index_lives_on_a_chroma_server(settings, chroma_server):
    import chromadb

    remote = settings.model_copy(update={"chroma_host": "127.0.0.1", "chroma_port": chroma_server})
    result = run_digest_job(remote)
    assert result.success
    index = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "retrieval_index"
    )
    collection = index.materialization.metadata["location"].value.split("collection ")[1].rstrip(")")
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server)
    assert client.get_collection(collection).count() == index.materialization.metadata["chunks"].value
    assert not (remote.data_dir / "chroma").exists()


@pytest.mark.integration
def test_stack_names_what_it_is_missing(tmp_path):
    env = {**os.environ, "AI_PIPELINES_DATA_DIR": str(tmp_path), "AI_PIPELINES_POSTGRES_URL": "", "DAGSTER_HOME": ""}
    unset = subprocess.run([str(CLI), "stack"], env=env, capture_output=True, text=True, timeout=120)
    assert unset.returncode == 2 and "AI_PIPELINES_POSTGRES_URL is required" in unset.stderr
    env["AI_PIPELINES_POSTGRES_URL"] = "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"
    unreachable = subprocess.run([str(CLI), "stack"], env=env, capture_output=True, text=True, timeout=120)
    assert unreachable.returncode == 2 and "cannot reach Postgres at 127.0.0.1:1" in unreachable.stderr


@pytest.mark.services
def test_inbox_sensor_under_the_daemon_turns_new_files_into_one_run(prod, tmp_path, llm):
    settings, home = prod
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"note-{i}.md").write_text(
            f"# Note {i}\n\nOrion Freight opened depot {i} in Leeds. It employs {40 + i} people.\n"
        )
    stack = StackProcess(settings, home, tmp_path, max_concurrent_runs=2)
    stack.env.update({"AI_PIPELINES_INBOX_DIR": str(inbox), "AI_PIPELINES_CORPUS_DIR": str(tmp_path / "no-corpus")})
    stack.start()
    try:
        selector = {
            "repositoryLocationName": "ai_pipelines",
            "repositoryName": "__repository__",
            "sensorName": "inbox_sensor",
        }
        started = graphql(stack.port, START_SENSOR, {"s": selector})
        assert started["data"]["startSensor"]["__typename"] == "Sensor", started
        with DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 240
            while not instance.get_run_records():
                assert time.monotonic() < deadline, "the sensor requested no run"
                time.sleep(1)
            watch(instance, [r.dagster_run.run_id for r in instance.get_run_records()])
            [run] = [r.dagster_run for r in instance.get_run_records()]
            partitions = instance.get_dynamic_partitions(DOCUMENTS.name)
    finally:
        assert stack.stop() == 0
    assert run.status == DagsterRunStatus.SUCCESS and run.job_name == "document_job"
    assert partitions == ["inbox/note-0.md", "inbox/note-1.md", "inbox/note-2.md"]
    batches = batches_of(partitions)
    assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
        batches[0],
        batches[-1],
    )
    assert llm.calls_for("ExtractedSignals") == 3


START_SENSOR = (
    "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename ... on PythonError { message } } }"
)
