"""Secrets: planted keys never reach the event log, snapshots, the UI, metadata, tables or reports.

Issue 10, defect 3: fallback keys (and keys read from `.env`) were plain config values, so
the job snapshot in the instance database and the webserver's GraphQL showed them. Here
the real graph runs through the CLI with recognizable fake keys as the primary key (its
endpoint answers 401 and echoes the key back, as some providers do), as a fallback key,
and as the embeddings key in a `.env` file; then every place a key could end up is read
back through its own API and searched for the keys' common prefix.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from ai_pipelines.definitions import build_definitions, build_resources, fallback_key_variable
from ai_pipelines.instance import instance_yaml
from ai_pipelines.settings import Settings
from tests.conftest import (
    BIN,
    CLI,
    DATA,
    ROOT,
    free_port,
    graphql,
    server_environment,
    stop_process_group,
    warehouse_text,
)
from tests.fake_openai import FakeOpenAI, Fault

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

RESOURCES_QUERY = """
query ($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
    __typename
    ... on ResourceDetailsList { results { name configuredValues { key value type } } }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture
def restored_environ():
    """The code location exports keys into os.environ when it loads; undo that after the test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_every_key_reaches_dagster_only_as_an_env_var(tmp_path, restored_environ):
    planted = f"sk-planted-{uuid.uuid4().hex}"
    (tmp_path / ".env").write_text(
        f"AI_PIPELINES_LLM_API_KEY={planted}-primary\nAI_PIPELINES_EMBEDDINGS_API_KEY={planted}-embeddings\n"
    )
    os.environ.pop("AI_PIPELINES_LLM_API_KEY", None)
    os.environ.pop("AI_PIPELINES_EMBEDDINGS_API_KEY", None)
    os.environ["MY_BACKUP_KEY"] = f"{planted}-by-name"
    fallbacks = [
        {"name": "backup", "base_url": "http://127.0.0.1:9/v1", "api_key": f"{planted}-literal"},
        {"name": "named", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_BACKUP_KEY"},
    ]
    settings = Settings(_env_file=tmp_path / ".env", data_dir=tmp_path / "data", llm_fallbacks=fallbacks)
    assert settings.llm_api_key == f"{planted}-primary"  # control: the key did come from .env

    snapshot = serialize_value(RepositorySnap.from_def(build_definitions(settings).get_repository_def()))
    assert planted not in snapshot
    for variable in [
        "AI_PIPELINES_LLM_API_KEY",
        "AI_PIPELINES_EMBEDDINGS_API_KEY",
        "MY_BACKUP_KEY",
        fallback_key_variable("backup"),
    ]:
        assert variable in snapshot  # each key is there by its variable's name

    # And each resolves to its value when the resource is initialized, as in a run.
    model = build_resources(settings)["model"].process_config_and_initialize()
    assert [e.api_key for e in model.chain()] == [f"{planted}-primary", f"{planted}-literal", f"{planted}-by-name"]
    embeddings = build_resources(settings)["vector_store"].embeddings.process_config_and_initialize()
    assert embeddings.api_key == f"{planted}-embeddings"


def _texts_of_instance(instance: DagsterInstance) -> dict[str, str]:
    """Every run's record, events, job snapshot and execution plan snapshot, deserialized by the instance."""
    texts: dict[str, str] = {}
    metadata = []
    runs = instance.get_runs()
    assert runs
    for run in runs:
        events = instance.all_logs(run.run_id)
        metadata += [e.asset_materialization.metadata for e in events if e.asset_materialization is not None]
        texts[f"run {run.run_id}"] = serialize_value(run)
        texts[f"events of {run.run_id}"] = "\n".join(serialize_value(e) for e in events)
        texts[f"job snapshot of {run.run_id}"] = serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
        texts[f"plan snapshot of {run.run_id}"] = serialize_value(
            instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        )
    assert any("model_calls" in m for m in metadata)  # control: the model-using assets' metadata is here
    texts["materialization metadata"] = json.dumps([{k: repr(v) for k, v in m.items()} for m in metadata])
    return texts


def _texts_of_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
        return "\n".join(repr(db.execute(f"select * from {t}").fetchall()) for t in tables)


class Webserver:
    """`dagster-webserver` on 127.0.0.1, started before the run so that the two start up side by side."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                str(BIN / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-w",
                str(ROOT / "workspace.yaml"),
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def resource_details(self) -> str:
        deadline = time.monotonic() + 120
        selector = {"repositoryLocationName": "ai_pipelines", "repositoryName": "__repository__"}
        while True:
            try:
                details = graphql(self.port, RESOURCES_QUERY, {"selector": selector})["data"][
                    "allTopLevelResourceDetailsOrError"
                ]
                if details["__typename"] == "ResourceDetailsList":
                    return json.dumps(details)
            except OSError:
                pass
            assert self.process.poll() is None, "dagster-webserver exited"
            assert time.monotonic() < deadline, "dagster-webserver did not answer in time"
            time.sleep(0.5)

    def stop(self) -> None:
        stop_process_group(self.process)  # with the code server it started


def test_a_planted_key_reaches_no_log_snapshot_ui_metadata_table_or_report(tmp_path, llm):
    planted = f"sk-planted-{uuid.uuid4().hex}"
    work = tmp_path / "work"  # the CLI's and the webserver's working directory, with its .env
    work.mkdir()
    (work / ".env").write_text(f"AI_PIPELINES_EMBEDDINGS_API_KEY={planted}-embeddings\n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))
    with FakeOpenAI() as backup:
        # The primary refuses the key and echoes it, as some providers do; the fallback answers.
        llm.persistent_fault = Fault(status=401, message="Incorrect API key provided: {api_key}")
        settings = Settings(
            data_dir=tmp_path / "data",
            llm_base_url=llm.base_url,
            llm_fast_model="fake-fast",
            llm_strong_model="fake-strong",
        )
        env = {
            **server_environment(settings, home, tmp_path),
            "AI_PIPELINES_CORPUS_DIR": str(DATA / "external_corpus"),  # five documents keep the run short
            "AI_PIPELINES_LLM_API_KEY": f"{planted}-primary",
            "AI_PIPELINES_LLM_FALLBACKS": json.dumps(
                [
                    {
                        "name": "backup",
                        "base_url": backup.base_url,
                        "api_key": f"{planted}-fallback",
                        "fast_model": "fake-fast",
                        "strong_model": "fake-strong",
                    }
                ]
            ),
        }
        env.pop("AI_PIPELINES_EMBEDDINGS_API_KEY", None)
        assert planted in json.dumps(env)  # control: the search below finds the key where it is
        webserver = Webserver(env, work)
        try:
            result = subprocess.run([str(CLI), "run"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
            ui = webserver.resource_details()
        finally:
            webserver.stop()
        assert backup.requests > 0 and llm.requests > 0

    data = settings.data_dir
    assert (data / "outputs" / "digest.md").exists(), result.stdout + result.stderr
    with DagsterInstance.from_config(str(home)) as instance:
        places = _texts_of_instance(instance)
    places["cli stdout and stderr (run report)"] = result.stdout + result.stderr
    places["trace table"] = _texts_of_sqlite(data / "cache" / "traces.sqlite")
    places["response cache"] = _texts_of_sqlite(data / "cache" / "responses.sqlite")
    places["warehouse tables"] = warehouse_text(data / "warehouse.duckdb")
    places["graphql resource config"] = ui
    for path in sorted((data / "outputs").rglob("*")):
        if path.is_file():
            places[f"output {path.name}"] = path.read_bytes().decode(errors="replace")
    for root in (data, home):  # every byte on disk, for whatever is stored uncompressed
        for path in sorted(root.rglob("*")):
            if path.is_file():
                places[f"file {path.relative_to(tmp_path)}"] = path.read_bytes().decode("latin-1")

    leaks = [where for where, text in places.items() if planted in text]
    assert leaks == []
    # Controls: the places searched hold what a leak would sit beside.
    assert "[redacted]" in places["trace table"]  # the primary's echoed 401 was recorded, without its key
    assert fallback_key_variable("backup") in places[next(k for k in places if k.startswith("job snapshot"))]
    assert '"type": "ENV_VAR"' in ui and "AI_PIPELINES_LLM_API_KEY" in ui
    for name in ["digest.md", "digest.html"]:
        assert f"output {name}" in places
