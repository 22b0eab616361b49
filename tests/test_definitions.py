"""The code location loads, validates with Dagster's own CLI, and shows its described groups: six
for the digest, four for support triage."""

import os
import subprocess

import pytest
from dagster import BackfillPolicy

from ai_pipelines.definitions import defs
from tests.conftest import BIN, ROOT

# Tiers, marked per test: the loaded definitions are unit; `dagster definitions validate` in a process, integration.

GROUPS = {
    "ingestion",
    "retrieval",
    "signals",
    "drafts",
    "fact_checks",
    "summaries",
    "triage_intake",
    "triage_routing",
    "triage_replies",
    "triage_delivery",
}


@pytest.mark.integration
def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "AI_PIPELINES_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_groups_with_descriptions_and_blocking_checks():
    graph = defs.resolve_asset_graph()
    specs = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    assert {node.group_name for node in specs.values()} == GROUPS
    assert all(node.description for node in specs.values()), [k for k, n in specs.items() if not n.description]
    checks = {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}
    # Eight blocking checks gate the digest's stages (one of them the headlines' schema check, declared
    # in YAML) and two the triage's (readable tickets, replies that pass the output guardrails); two
    # warnings say when a stage's model requests failed, one when many drafted claims fail as written
    # (refinement follows; draft_revisions blocks on what still fails), one when too few headlines
    # meet their rubric, and one when documents' tones contradict their own event words.
    assert sorted(name for name, spec in checks.items() if not spec.blocking) == [
        "draft_requests_succeeded",
        "rubric",
        "signal_consistency",
        "signal_requests_succeeded",
        "unsupported_share_within_limit",
    ]
    assert sum(spec.blocking for spec in checks.values()) == 10


@pytest.mark.unit
def test_per_document_assets_share_the_document_batches_and_backfill_in_one_run():
    from assets.components.partitions import DOCUMENT_BATCHES

    graph = defs.resolve_asset_graph()
    partitioned = {
        key.to_user_string(): graph.get(key).backfill_policy
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def == DOCUMENT_BATCHES
    }
    assert set(partitioned) == {"source_documents", "quarantined_documents", "chunks", "signals"}
    assert all(policy == BackfillPolicy.single_run() for policy in partitioned.values())
    assert {"inbox_sensor", "index_automation", "record_run_failures"} <= {s.name for s in defs.sensors}


@pytest.mark.unit
def test_every_asset_presents_owners_kinds_code_version_and_table_schema():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        name = key.to_user_string()
        assert spec.owners and spec.code_version, name
        assert any(tag.startswith("dagster/kind/") for tag in spec.tags), name
        if "duckdb" in {t.removeprefix("dagster/kind/") for t in spec.tags}:
            assert "dagster/column_schema" in spec.metadata, name
