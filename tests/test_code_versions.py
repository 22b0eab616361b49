"""Prompts and models are part of code versions: changing one marks exactly the assets whose
outputs it shapes (tests/test_llm_steps.py edits the signals prompt file and follows the staleness)."""

import pytest

from ai_pipelines.definitions import build_definitions
from assets.components.llm_step import project_step
from assets.digest import drafts
from assets.digest.signals import SIGNALS
from resources.prompts import Prompt

# Tiers, marked per test: the prompt's version is unit; code versions of definitions built on fake-server settings, integration.


@pytest.mark.unit
def test_prompt_version_is_part_of_the_code_version():
    edited = Prompt(name="draft_brief", template=drafts.PROMPT.template + "\nBe brief.")
    assert edited.version != drafts.PROMPT.version
    assert drafts.PROMPT.version in drafts.CODE_VERSION
    assert SIGNALS.call.prompt.version in SIGNALS.code_version
    headlines = project_step("summary_headlines")
    assert headlines.prompt_template.version in headlines.code_version


@pytest.mark.integration  # the fake model server, through the settings fixture
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
        "source_documents",
        "quarantined_documents",
        "signals",
        "drafts",
        "fact_checks",
        "draft_revisions",
        "summaries",
        "summary_headlines",
        "digest_report",
        "ticket_screening",
        "ticket_routes",
        "ticket_context",
        "reply_drafts",
    }
    assert changed_by(embeddings_model="another-embedder") == {
        "retrieval_index",
        "drafts",
        "fact_checks",
        "draft_revisions",
        "summaries",
        "ticket_routes",  # the semantic router: the nearest routing examples by embedding
    }
    # The retrieval mode ranks what a search returns: it marks the vector store's users, like the embedder.
    assert changed_by(retrieval_mode="vector") == changed_by(embeddings_model="another-embedder")
