"""Fixtures and helpers shared by the test modules, and the test tiers they are sorted into.

Every test module names its tier with `pytestmark` (markers registered in pyproject.toml), so
that a person can run the fast tier alone and CI can tell a missing server from a failing test:

- unit: pure functions; no server, no process, no Dagster run (an in-memory instance's records at most);
- integration: in-process Dagster runs and command-line runs against the fake OpenAI server
  (tests/fake_openai.py), the embedded models, Chroma on disk and the SMTP test server;
- services: an external server (PostgreSQL, RabbitMQ, a Chroma server); when the server is not
  there the test is skipped with how to start it, except in CI (`CI=true`) where the same
  message fails it, so a CI machine that lost its services cannot pass by skipping them;
- browser: the Dagster UI in Debian's Chromium, driven by Playwright.

The helpers are here because several modules need them: fake-server settings, one digest run,
a `dagster dev` on the workspace, the environment of a command the test starts, the warehouse's
rows and a materialization's metadata read back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult

from ai_pipelines.instance import instance_yaml
from ai_pipelines.settings import Settings
from assets.digest.draft_revisions import PublishableClaim, RevisionRound, outcomes
from assets.digest.fact_checks import FactCheck
from assets.digest.summaries import TopicSummary, write_summaries
from resources import Endpoint, ModelResource, ModelSession, VectorStoreResource
from resources.verification.claim_verification import ClaimVerifier
from tests.fake_openai import FakeOpenAI
from tests.ports import free_port
from tests.smtp_server import SmtpTestServer

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
BIN = Path(sys.executable).parent  # the venv's commands: ai-pipelines, dagster, chroma
CLI = BIN / "ai-pipelines"


# --- Tiers ------------------------------------------------------------------------------------------

TIERS = ("unit", "integration", "services", "browser")
# Fixtures that reach a server outside the test process: a test using one is a services test.
SERVICE_FIXTURES = frozenset({"postgres_url", "rabbitmq"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so the default tier below is selectable
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test with no tier counts as integration (the tier that neither skips nor claims to be
    pure), with a warning naming its module; a test that uses an external service's fixture
    without the services marker stops the session, since `-m "not services"` would run it."""
    warned: set[str] = set()
    unmarked_services: list[str] = []
    for item in items:
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) and "services" not in tiers:
            unmarked_services.append(item.nodeid)
        if not tiers:
            item.add_marker(pytest.mark.integration)
            module = item.nodeid.split("::")[0]
            if module not in warned:
                warned.add(module)
                item.warn(
                    pytest.PytestWarning(
                        f"{module} declares no test tier (e.g. `pytestmark = pytest.mark.unit`): its tests count as integration"
                    )
                )
    if unmarked_services:
        raise pytest.UsageError(
            "tests using an external service must be marked services: " + ", ".join(unmarked_services)
        )
    if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: the suite on several workers
        plan_for_workers(items)


# --- Running on several workers (pytest-xdist, `make test`) -----------------------------------------

# `make test` hands out whole modules (`--dist loadfile`): a module's tests run on one worker, in
# order, so a module-scoped fixture (one run read by several tests) is made once, and test_deploy's
# production stacks (webserver, daemon, a process per run, celery workers) never run two at once.
# (`loadgroup` would allow finer groups, but with pytest 9.2 it silently groups nothing:
# pytest-xdist issue #1386.) The modules go out in the order below, those whose tests take
# longest first (minutes on a busy 2-core machine: commands started as processes, servers,
# hundreds of documents): started first they run side by side while short modules fill the
# gaps; started last, one of them would run alone at the end. An entry is a node id or a
# module; one that matches nothing changes only the order, never what runs.
SLOW_FIRST = (
    "tests/test_check_cli.py",
    "tests/test_cli_run.py",
    "tests/test_reliability.py",
    "tests/test_deploy.py",
    "tests/test_bench.py",
    "tests/test_calibrate_judge.py",
    "tests/test_slow_model.py",
    "tests/test_cli_progress.py",
    "tests/test_hybrid_retrieval.py",
    "tests/test_fact_check.py",
    "tests/test_triage.py",
    "tests/test_automation.py",
    "tests/test_browser.py",
    "tests/test_resume.py",
    "tests/test_headline_gates.py",
    "tests/test_routing_tiers.py",
    "tests/test_check_reports.py",
    "tests/test_webserver.py",
)


def plan_for_workers(items: list[pytest.Item]) -> None:
    """The longest modules first (SLOW_FIRST), the others in the suite's own order; every
    worker orders alike, as xdist requires."""

    def rank(item: pytest.Item) -> int:
        return next((i for i, start in enumerate(SLOW_FIRST) if item.nodeid.startswith(start)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the suite's own order within each rank


# --- External services: skipped outside CI, failed in CI -------------------------------------------

POSTGRES_URL_VARIABLE = "AI_PIPELINES_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_RABBITMQ = "rabbitmq-server -detached"


@dataclass(frozen=True)
class Service:
    """An external server a test needs, and what a person does to provide it."""

    name: str
    host: str
    port: int
    how_to_start: str

    def require(self) -> None:
        require_service(self.name, self.host, self.port, self.how_to_start)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def service_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at host:port (the server is up, not necessarily usable)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int, how_to_start: str) -> None:
    """Return when the server answers; otherwise skip the test with how to start it, or, in CI,
    fail it with the same words: CI's machine is meant to have every service the suite needs."""
    if service_reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}: {how_to_start}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def postgres_service() -> tuple[str, Service]:
    """The admin URL of the PostgreSQL server the tests create their databases on, and the server."""
    admin = os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL
    parts = urlsplit(admin)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    how = (
        f"start it (`{START_POSTGRES}`) or set {POSTGRES_URL_VARIABLE} to the URL of a server "
        "where tests may create databases (e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
    )
    return admin, Service("PostgreSQL", host, port, how)


def rabbitmq_service(broker: str) -> Service:
    """The RabbitMQ server of a celery broker URL (pyamqp://user:password@host:port//)."""
    parts = urlsplit(broker)
    how = f"start it (`{START_RABBITMQ}`) or set AI_PIPELINES_CELERY_BROKER to a running broker"
    return Service("RabbitMQ", parts.hostname or "127.0.0.1", parts.port or 5672, how)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway database on the PostgreSQL server (dropped after the test), as the
    SQLAlchemy URL that dagster-postgres and the settings take."""
    import psycopg2

    admin_url, service = postgres_service()
    service.require()
    name = f"aip_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'create database "{name}"')
        yield urlsplit(admin_url)._replace(scheme="postgresql+psycopg2", path=f"/{name}").geturl()
        with admin.cursor() as cursor:
            cursor.execute(f'drop database "{name}" with (force)')
    finally:
        admin.close()


@pytest.fixture
def rabbitmq(settings: Settings) -> str:
    """The celery broker URL of the settings, once its RabbitMQ server answers."""
    rabbitmq_service(settings.celery_broker).require()
    return settings.celery_broker


# --- Fake servers and settings ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm(fake_llm: FakeOpenAI) -> FakeOpenAI:
    fake_llm.reset()
    return fake_llm


@pytest.fixture
def second_llm() -> Iterator[FakeOpenAI]:
    """Another endpoint, for fallback chains."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that records what arrived; script faults with fail_data(n, "reject"|"drop")."""
    with SmtpTestServer() as server:
        yield server


def fake_settings(data_dir: Path, llm: FakeOpenAI) -> Settings:
    """Settings that point the real code location at the fake server and at `data_dir`."""
    return Settings(
        _env_file=None,  # a developer's .env must not reach the tests
        data_dir=data_dir,
        llm_base_url=llm.base_url,
        llm_fast_model="fake-fast",
        llm_strong_model="fake-strong",
    )


@pytest.fixture
def settings(tmp_path: Path, llm: FakeOpenAI) -> Settings:
    return fake_settings(tmp_path / "data", llm)


def gateway(primary: FakeOpenAI, fallback: FakeOpenAI | None = None, **overrides: Any) -> ModelResource:
    """The model gateway on the fake servers, with short backoff and timeouts so that fault tests stay fast."""
    fallbacks = [Endpoint(name="secondary", base_url=fallback.base_url, fast_model="second-fast")] if fallback else []
    options: dict[str, Any] = dict(
        base_url=primary.base_url,
        fast_model="first-fast",
        fallbacks=fallbacks,
        max_retries=2,
        backoff_initial_seconds=0.01,
        backoff_max_seconds=5,
        timeout_seconds=2,
    )
    return ModelResource(**{**options, **overrides})


# --- Runs and what they left -------------------------------------------------------------------------


def run_digest_job(settings: Settings, instance: DagsterInstance | None = None) -> ExecuteInProcessResult:
    """One in-process run of the digest over every document, as `ai-pipelines run --all` launches it."""
    # Imported here: the code location builds its definitions when imported, which the unit tier never needs.
    from ai_pipelines.backfill import run_over_all_documents
    from ai_pipelines.definitions import build_definitions, build_resources

    job = build_definitions(settings).resolve_job_def("digest_job")
    pipeline = build_resources(settings)["pipeline"]
    return run_over_all_documents(job, instance or DagsterInstance.ephemeral(), pipeline, raise_on_error=False)


def indexed_corpus(
    settings: Settings, collection: str, corpus: dict[str, str]
) -> tuple[ModelResource, VectorStoreResource]:
    """The code location's model and vector store with `corpus` (chunk id "<doc>-<n>" -> text) in
    `collection`: the small index a verifier test reads, without a run to build it."""
    from ai_pipelines.definitions import build_resources

    resources = build_resources(settings)
    vector_store = resources["vector_store"]
    vector_store.upsert(
        collection,
        ids=list(corpus),
        documents=list(corpus.values()),
        metadatas=[{"doc_id": i.rsplit("-", 1)[0], "position": 0, "document": i} for i in corpus],
    )
    return resources["model"], vector_store


def one_topic_summaries(
    topic: str,
    checks: Sequence[FactCheck],
    revisions: Sequence[RevisionRound],
    *,
    llm: ModelSession,
    verifier: ClaimVerifier,
    decompose: bool = True,
) -> tuple[list[PublishableClaim], list[TopicSummary]]:
    """The claims that checks and refinement leave publishable, and `topic`'s summary written from
    them as the summaries asset writes it: the end of the chain a generation test reads."""
    published, fate = outcomes(checks, revisions)
    excluded = Counter({topic: sum(v in ("withdrawn", "unsupported") for v in fate.values())})
    summaries = write_summaries(
        [topic],
        published,
        excluded,
        llm=llm,
        verifier=verifier,
        decompose=decompose,
        signals_by_doc={},
        index_version="v1",
    )
    return published, summaries


def materialization_metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata values of the run's first materialization of `asset` (for a partitioned
    asset, that of one partition: each describes its own document)."""
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(asset))
    return {k: v.value for k, v in event.materialization.metadata.items()}


def partition_metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, dict[str, Any]]:
    """Per partition of `asset` materialized by the run, its metadata values."""
    return {
        e.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey(asset)
    }


def warehouse_query(settings: Settings, sql: str) -> list[tuple]:
    """Rows of a query on the DuckDB warehouse, opened read-only as a person inspecting it would."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as db:
        return db.execute(sql).fetchall()


def warehouse_rows(settings: Settings, table: str) -> list[dict[str, Any]]:
    """Every row of `ai_pipelines.<table>`, as column -> value."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as db:
        frame = db.execute(f"select * from ai_pipelines.{table}").fetchdf()
    return frame.to_dict(orient="records")


def warehouse_text(path: Path) -> str:
    """Every row of every table of a DuckDB file as text, to search for what must not be stored."""
    with duckdb.connect(str(path), read_only=True) as db:
        tables = db.execute("select table_schema, table_name from information_schema.tables").fetchall()
        assert tables, f"no tables in {path}"
        return "\n".join(repr(db.execute(f'select * from "{s}"."{t}"').fetchall()) for s, t in tables)


# --- Files -------------------------------------------------------------------------------------------


def write_file(path: Path, data: bytes | str) -> Path:
    """`data` at `path` (UTF-8 when text), with its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def article(title: str, body: str) -> str:
    """A news item in the corpus's format: a title line, a date line, the body."""
    return f"# {title}\n\nDate: 2026-11-01\n\n{body}\n"


_DESK_ARTICLES = {
    "refund-policy": "# Refund policy\n\nRefunds are possible within 30 days of the order date.\n\n"
    "## How to ask\n\nWrite to support with your order number and we refund the amount paid.",
    "reset-password": "# Reset your password\n\nForgot your password? Click Forgot password on the sign-in page "
    "and follow the link in the email we send you.",
    "export-notes": "# Export your notes\n\nExport notebooks as Markdown or PDF from the notebook menu.",
}


def write_desk(folder: Path) -> Path:
    """A small support desk: two customers; C1 has orders paid, failed, refunded and one above the approval limit."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "customers.csv").write_text(
        "customer_id,name,email,plan,country,signup_date\n"
        "C1,Ada Lovelace,ada@example.com,Plus,United Kingdom,2024-01-10\n"
        "C2,Bob Martin,bob@example.org,Team,Germany,2024-02-11\n"
    )
    (folder / "orders.csv").write_text(
        "order_id,customer_id,order_date,product,amount_eur,status\n"
        "O1,C1,2025-03-01,Plus yearly,90.00,paid\n"
        "O2,C1,2025-03-05,Team yearly,380.00,paid\n"
        "O3,C1,2025-03-06,Lumen Pen,49.00,failed\n"
        "O4,C1,2025-03-07,Onboarding session,120.00,refunded\n"
        "O5,C2,2025-03-08,Plus yearly,90.00,paid\n"
    )
    (folder / "known_issues.csv").write_text(
        "issue_id,title,status,workaround,article\n"
        'KI-1,Sync stalls on iOS,open,"Sign out and back in.",reset-password\n'
    )
    (folder / "help_centre").mkdir(exist_ok=True)
    for slug, text in _DESK_ARTICLES.items():
        (folder / "help_centre" / f"{slug}.md").write_text(text)
    return folder


# --- Processes the tests start -------------------------------------------------------------------------


def process_environment(settings: Settings, **variables: str) -> dict[str, str]:
    """The environment of a command a test starts (`ai-pipelines`, `dagster`) so that it loads
    the code location as `settings` configure it; without DAGSTER_HOME unless given, so the
    command uses the home under the data directory rather than the developer's."""
    environment = {
        **os.environ,
        "AI_PIPELINES_DATA_DIR": str(settings.data_dir),
        "AI_PIPELINES_LLM_BASE_URL": settings.llm_base_url,
        "AI_PIPELINES_LLM_FAST_MODEL": settings.llm_fast_model,
        "AI_PIPELINES_LLM_STRONG_MODEL": settings.llm_strong_model,
    }
    environment.pop("DAGSTER_HOME", None)
    return {**environment, **variables}


def server_environment(settings: Settings, home: Path, tmp_path: Path) -> dict[str, str]:
    """What a Dagster process started by a test needs to load this code location as the test
    configured it; sockets and profiles go to the test's folder."""
    return process_environment(settings, DAGSTER_HOME=str(home), TMPDIR=str(tmp_path))


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process's group, then SIGKILL to whatever of it is left (a `dagster` command's
    code servers would otherwise linger until their heartbeat times out)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def answering_server(
    command: list[str], answers: Callable[[], bool], name: str, timeout: float, interval: float = 1, **popen: Any
) -> Iterator[subprocess.Popen]:
    """A server started in a process group of its own, yielded once `answers()` is true (an
    OSError from it meaning not yet); the whole group is stopped after, with whatever it started.
    Its home is the test's own and thrown away, so it gets 10 s to stop before it is killed: on a
    busy machine `dagster dev` may take longer than the test's own work to shut down in order."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **popen
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if answers():
                    break
            except OSError:
                pass
            assert process.poll() is None, f"{name} exited"
            assert time.monotonic() < deadline, f"{name} did not answer in time"
            time.sleep(interval)
        yield process
    finally:
        stop_process_group(process, timeout=10)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


@pytest.fixture
def dagster_dev(tmp_path: Path, settings: Settings) -> Iterator[int]:
    """`dagster dev` on the workspace over an instance holding one digest run; yields its port."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))
    with DagsterInstance.from_config(str(home)) as instance:
        assert run_digest_job(settings, instance).success
    port = free_port()

    def answers() -> bool:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).close()
        return "data" in graphql(port, "{ assetNodes { id } }")

    with answering_server(
        [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
        answers,
        "dagster dev",
        timeout=180,
        cwd=ROOT,
        env=server_environment(settings, home, tmp_path),
    ):
        yield port
