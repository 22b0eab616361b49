"""`dagster dev` on the workspace: the UI's GraphQL API shows the groups (six for the digest, four
for support triage) with their descriptions, and a run's materializations with their metadata."""

import pytest

from tests.conftest import graphql

pytestmark = pytest.mark.integration

QUERY = """
{ assetNodes { assetKey { path } groupName description
    assetMaterializations(limit: 1) { metadataEntries { label } } } }
"""
# Every materialization of signals, one per partition, with how many documents each read: the
# newest may be a partition of quarantined documents only, which asked the model nothing and so
# has no usage figures; the test reads one of a partition whose documents the model was asked about.
SIGNALS = """
{ assetNodeOrError(assetKey: {path: ["signals"]}) { ... on AssetNode {
    assetMaterializations { partition metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }
"""


def documents_read(materialization: dict) -> int:
    return next((e["intValue"] for e in materialization["metadataEntries"] if e["label"] == "documents"), 0) or 0


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
    signals = graphql(dagster_dev, SIGNALS)["data"]["assetNodeOrError"]["assetMaterializations"]
    asked = [m for m in signals if documents_read(m) > 0]
    assert asked, signals
    for usage_labels in ({e["label"] for e in m["metadataEntries"]} for m in asked):
        assert {"model_calls", "prompt_tokens", "latency_p50_s", "calls_by_model", "preview"} <= usage_labels
    assert {"preview", "location"} <= labels["summaries"]
    assert {"index_version", "embedding_model"} <= labels["retrieval_index"]
