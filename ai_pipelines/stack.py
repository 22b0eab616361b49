"""The production stack on one machine: dagster-webserver and dagster-daemon (and,
optionally, celery workers) on the instance in deploy/dagster.yaml, backed by Postgres.

Stopping drains before it stops: the daemon goes first, so nothing more leaves the
queue; runs already in progress get `drain_seconds` to finish; then the webserver
and the workers stop. Queued runs stay queued in Postgres and the next start picks
them up, so a restart loses no run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from ai_pipelines.settings import Settings, SettingsError
from resources.gateway.model import MODEL_POOL
from resources.storage.state_store import libpq_url

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ACTIVE = ("STARTING", "STARTED", "CANCELING")


class StackError(RuntimeError):
    pass


def ensure_database(url: str) -> None:
    """Create the instance's database on its server when it does not exist yet."""
    import psycopg2

    parts = urlsplit(libpq_url(url))
    database = parts.path.lstrip("/")
    try:
        connection = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")), connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise StackError(f"cannot reach Postgres at {parts.hostname}:{parts.port or 5432}: {exc}".strip()) from exc
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("select 1 from pg_database where datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(f'create database "{database}"')
    finally:
        connection.close()


def prepare_home(settings: Settings) -> Path:
    """A Dagster home holding deploy/dagster.yaml and the celery worker's broker config."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.data_dir / "dagster_home_prod").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    celery = {"execution": {"config": {"broker": settings.celery_broker, "backend": settings.celery_backend}}}
    (home / "celery.yaml").write_text(yaml.safe_dump(celery))
    return home


def stack_environment(settings: Settings, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        # dagster-celery starts `celery` by name: the venv's own must come first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "DAGSTER_HOME": str(home),
        "AI_PIPELINES_POSTGRES_URL": settings.postgres_url,
        "AI_PIPELINES_MAX_CONCURRENT_RUNS": str(settings.max_concurrent_runs),
    }


class Stack:
    def __init__(self, settings: Settings, port: int, celery_workers: int = 0, drain_seconds: float = 300):
        if not settings.postgres_url:
            raise SettingsError(
                "AI_PIPELINES_POSTGRES_URL is required for the production stack, "
                "e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/ai_pipelines"
            )
        self.settings = settings
        self.port = port
        self.celery_workers = celery_workers
        self.drain_seconds = drain_seconds
        self.home = prepare_home(settings)
        self.env = stack_environment(settings, self.home)
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, *command: str) -> None:
        binary = Path(sys.executable).parent / command[0]
        self.processes[name] = subprocess.Popen(
            [str(binary), *command[1:]], cwd=ROOT, env=self.env, start_new_session=True
        )

    def start(self) -> None:
        from dagster import DagsterInstance

        ensure_database(self.settings.postgres_url)
        os.environ.update(self.env)
        with DagsterInstance.from_config(str(self.home)) as instance:  # creates or migrates the schema
            instance.event_log_storage.set_concurrency_slots(MODEL_POOL, self.settings.model_pool_limit)
        workspace = str(ROOT / "workspace.yaml")
        for i in range(self.celery_workers):
            self._start(
                f"celery-worker-{i}",
                "dagster-celery",
                "worker",
                "start",
                "-A",
                "dagster_celery.app",
                "-y",
                str(self.home / "celery.yaml"),
                "-n",
                f"ai-pipelines-{i}",
            )
        self._start("daemon", "dagster-daemon", "run", "-w", workspace)
        self._start("webserver", "dagster-webserver", "-h", "127.0.0.1", "-p", str(self.port), "-w", workspace)

    def _signal_leader(self, name: str) -> None:
        """SIGTERM to the process alone: run workers it launched share its process group
        and must be left to finish."""
        process = self.processes.get(name)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass

    def _terminate_group(self, name: str) -> None:
        process = self.processes.pop(name)
        for signum, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 0)):
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait) if wait else None
            except subprocess.TimeoutExpired:
                pass

    def active_runs(self) -> int:
        from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

        with DagsterInstance.from_config(str(self.home)) as instance:
            statuses = [DagsterRunStatus(s) for s in ACTIVE]
            return len(instance.get_run_records(RunsFilter(statuses=statuses)))

    def stop(self) -> None:
        self._signal_leader("daemon")
        deadline = time.monotonic() + self.drain_seconds
        while self.active_runs() and time.monotonic() < deadline:
            time.sleep(2)
        for name in list(self.processes):
            self._terminate_group(name)

    def wait(self) -> int:
        """Until a signal asks to stop (exit 0) or a process dies on its own (exit 1)."""
        stopping: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda number, frame: stopping.append(number))
        while not stopping:
            dead = [name for name, p in self.processes.items() if p.poll() is not None]
            if dead:
                print(f"{', '.join(dead)} exited; stopping the stack", file=sys.stderr, flush=True)
                self.stop()
                return 1
            time.sleep(1)
        print("Stopping: daemon first, then waiting for runs in progress ...", flush=True)
        self.stop()
        return 0
