"""Changing a prompt changes its asset's code version, and only that asset and what depends on
it turn stale; everything upstream stays fresh."""

from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from ai_pipelines.definitions import build_definitions
from assets import drafts, signals
from assets.prompts import Prompt
from tests.conftest import run_digest_job


def test_prompt_version_is_part_of_the_code_version():
    edited = Prompt(name="signals", template=signals.PROMPT.template + "\nBe brief.")
    assert edited.version != signals.PROMPT.version
    assert signals.PROMPT.version in signals.CODE_VERSION and drafts.PROMPT.version in drafts.CODE_VERSION


def test_changing_one_prompt_makes_only_dependent_assets_stale(settings):
    instance = DagsterInstance.ephemeral()
    assert run_digest_job(settings, instance).success
    defs = build_definitions(settings)
    edited_version = Prompt(name="signals", template=signals.PROMPT.template + "\nBe brief.").version
    changed = [
        a.map_asset_specs(
            lambda spec: spec.replace_attributes(code_version=spec.code_version.replace(signals.PROMPT.version, edited_version))
        )
        if AssetKey("signals") in a.keys
        else a
        for a in defs.assets
    ]
    resolver = get_stale_status_resolver(instance, changed)
    graph = AssetGraph.from_assets(changed)
    documents = instance.get_dynamic_partitions("documents")

    def status_of(key: AssetKey) -> StaleStatus:
        """A partitioned asset counts as stale when any of its documents is."""
        if graph.get(key).partitions_def is None:
            return resolver.get_status(key)
        statuses = {resolver.get_status(key, partition) for partition in documents}
        return StaleStatus.STALE if StaleStatus.STALE in statuses else statuses.pop()

    status = {key.to_user_string(): status_of(key) for key in graph.get_all_asset_keys()}
    # Dagster marks the asset whose code changed; its dependents turn stale once it has been
    # re-materialized with a new data version ("Materialize stale" then walks down the graph).
    assert {k for k, v in status.items() if v == StaleStatus.STALE} == {"signals"}
    [cause] = resolver.get_stale_root_causes(AssetKey("signals"), documents[0])
    assert cause.reason == "has a new code version"
    assert all(status[k] == StaleStatus.FRESH for k in ["source_documents", "chunks", "retrieval_index", "drafts"])


def test_switching_models_changes_the_code_version_of_model_assets_only(settings):
    def versions(s):
        graph = build_definitions(s).resolve_asset_graph()
        return {key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()}

    def changed_by(**update) -> set[str]:
        before, after = versions(settings), versions(settings.model_copy(update=update))
        return {k for k in before if before[k] != after[k]}

    # The report only reads the trace table through the model resource, yet carries the fingerprint:
    # its cost figures come from the models that answered.
    # Ingestion carries it too: the fast tier screens suspect text for prompt injection.
    # Refinement and summaries write with the models and verify against the index.
    # Triage: screening, routing, history summaries and replies are the models' answers.
    assert changed_by(llm_fast_model="another-fast-model") == {
        "source_documents", "quarantined_documents", "signals", "drafts", "fact_checks", "draft_revisions",
        "summaries", "digest_report", "ticket_screening", "ticket_routes", "ticket_context", "reply_drafts",
    }
    assert changed_by(embeddings_model="another-embedder") == {
        "retrieval_index", "drafts", "fact_checks", "draft_revisions", "summaries"
    }
