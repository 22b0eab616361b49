"""`dagster dev` on the workspace: the UI's GraphQL API shows the groups (six for the digest, four
for support triage) with their descriptions, and a run's materializations with their metadata."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterInstance

from ai_pipelines.instance import instance_yaml
from tests.conftest import run_digest_job

ROOT = Path(__file__).parent.parent
QUERY = """
{ assetNodes { assetKey { path } groupName description
    assetMaterializations(limit: 1) { metadataEntries { label } } } }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(settings, home: Path, tmp_path: Path) -> dict[str, str]:
    """What a Dagster process started by a test needs to load this code location as the test configured it."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TMPDIR": str(tmp_path),
        "AI_PIPELINES_DATA_DIR": str(settings.data_dir),
        "AI_PIPELINES_LLM_BASE_URL": settings.llm_base_url,
        "AI_PIPELINES_LLM_FAST_MODEL": settings.llm_fast_model,
        "AI_PIPELINES_LLM_STRONG_MODEL": settings.llm_strong_model,
    }


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


@pytest.fixture
def dagster_dev(tmp_path, settings):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))
    with DagsterInstance.from_config(str(home)) as instance:
        assert run_digest_job(settings, instance).success
    port = free_port()
    env = server_environment(settings, home, tmp_path)
    dagster = Path(sys.executable).parent / "dagster"
    process = subprocess.Popen(
        [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                if "data" in graphql(port, "{ assetNodes { id } }"):
                    break
            except OSError:
                pass
            assert process.poll() is None, "dagster dev exited"
            assert time.monotonic() < deadline, "dagster dev did not answer in time"
            time.sleep(1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:  # code servers left behind in the group would otherwise linger until their heartbeat times out
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ui_shows_groups_descriptions_and_materialization_metadata(dagster_dev):
    nodes = graphql(dagster_dev, QUERY)["data"]["assetNodes"]
    digest_groups = {"ingestion", "retrieval", "signals", "drafts", "fact_checks", "summaries"}
    triage_groups = {"triage_intake", "triage_routing", "triage_replies", "triage_delivery"}
    assert {n["groupName"] for n in nodes} == digest_groups | triage_groups
    assert all(n["description"] for n in nodes)
    nodes = [n for n in nodes if n["groupName"] in digest_groups]  # the fixture ran the digest
    labels = {
        "/".join(n["assetKey"]["path"]): {e["label"] for e in n["assetMaterializations"][0]["metadataEntries"]}
        for n in nodes
        if n["assetMaterializations"]
    }
    # Everything but the published digest, which waits for a person's approval.
    assert set(labels) == {"/".join(n["assetKey"]["path"]) for n in nodes} - {"published_digest"}
    assert {"model_calls", "prompt_tokens", "latency_p50_s", "calls_by_model", "preview"} <= labels["signals"]
    assert {"preview", "location"} <= labels["summaries"]
    assert {"index_version", "embedding_model"} <= labels["retrieval_index"]
