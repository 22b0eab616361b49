"""What the stages are told: where documents come from, where outputs go, and the
quality thresholds that gate publication.

It is a resource so that the thresholds are visible on the Definitions in the UI and
can be set per deployment. Each field here is the one declaration of its knob (default,
bound, description): the code location's settings (`ai_pipelines.settings`) take theirs
from these fields and fill them from environment variables.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from resources.support.agent import AgentLimits
from resources.support.support_desk import SupportDeskResource

SAMPLE_CORPUS_DIR = Path(__file__).parent / "documents" / "sample_corpus"


class PipelineConfig(ConfigurableResource):
    corpus_dir: str = Field(default=str(SAMPLE_CORPUS_DIR), description="Documents to ingest.")
    inbox_dir: str = Field(default="data/inbox", description="Extra documents dropped by users.")
    output_dir: str = Field(default="data/outputs", description="Where the digest, reports and the outbox are written.")
    state_url: str = Field(
        default="", description="Postgres URL for the approval log; empty = a SQLite file in output_dir."
    )
    index_collection: str = Field(
        default="chunks",
        description="Chroma collection of the retrieval index (the embedding model's hash is appended).",
    )
    chunk_chars: int = Field(default=600, ge=100, description="Target chunk size in characters.")
    max_document_bytes: int = Field(default=2_000_000, ge=1, description="Larger files are quarantined.")
    max_document_chars: int = Field(
        default=100_000, ge=1, description="A document's text is cut here; the cut is recorded."
    )
    max_chunk_chars: int = Field(
        default=1_500, ge=100, description="Hard cap on a chunk; longer sentences are split at whitespace."
    )
    screen_with_model: bool = Field(
        default=False,
        description="Send sentences with weak prompt-injection cues to the fast tier; the heuristics always run.",
    )
    topics: list[str] = Field(default=[], description="Draft topics; empty = the most-cited entities.")
    max_topics: int = Field(default=4, ge=1, description="Topics drafted when none are given.")
    claims_per_draft: int = Field(
        default=4, ge=1, description="Claims one draft makes, each verified against the index."
    )
    max_quarantine_share: float = Field(
        default=0.25, ge=0, le=1, description="Blocks when a larger share of documents fails to parse."
    )
    min_signal_validity: float = Field(
        default=0.8, ge=0, le=1, description="Share of documents whose signals must validate."
    )
    min_entity_kind_accuracy: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="On the labelled sample, share of extracted entities whose kind must be a labelled one.",
    )
    min_tone_accuracy: float = Field(
        default=0.85,
        ge=0,
        le=1,
        description="On the labelled sample, share of documents whose tone must be a labelled one.",
    )
    max_tone_contradiction_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of documents whose tone their own event words contradict before the signals warn.",
    )
    decompose_claims: bool = Field(
        default=False, description="Split each written sentence into atomic claims (fast tier) before verifying it."
    )
    max_refinement_rounds: int = Field(
        default=2, ge=0, description="Rounds in which an unsupported claim goes back to the strong tier to be revised."
    )
    refinement_calls_per_drafting_call: float = Field(
        default=3.0,
        ge=0,
        description="Cap on a run's revision requests, as a multiple of its drafting requests; "
        "claims left unrefined by the cap are dropped and counted.",
    )
    max_unsupported_share: float = Field(
        default=0.4, ge=0, le=1, description="Share of claims allowed to be not supported before summaries are blocked."
    )
    max_failed_request_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of a stage's model requests that may fail (outage or invalid answers) before its warning check fails.",
    )

    def inbox_path(self) -> Path:
        return Path(self.inbox_dir)

    def state_location(self, name: str) -> str:
        """Where durable decisions and memory live: the Postgres state database, or `<output_dir>/<name>.sqlite`."""
        return self.state_url or str(self.output_path() / f"{name}.sqlite")

    def output_path(self) -> Path:
        path = Path(self.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path


SUPPORT_DESK_DIR = Path(__file__).parent / "support" / "desk"


class TriageConfig(ConfigurableResource):
    """What the support-triage stages are told: where tickets arrive, and the caps and
    thresholds of routing, the reply agent, refinement, memory and approval.

    The agent's caps and the refund limit are the agent's and the support desk's own
    declarations, so the two never disagree on a default or a bound."""

    tickets_dir: str = Field(
        default=str(SUPPORT_DESK_DIR / "tickets"), description="Bundled tickets (partition keys samples/<file>)."
    )
    ticket_inbox_dir: str = Field(
        default="data/ticket_inbox", description="Tickets dropped by users or a mail gateway (keys inbox/<file>)."
    )
    max_ticket_bytes: int = Field(default=100_000, ge=1, description="Larger ticket files are quarantined.")
    min_route_confidence: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Below this the classifier's route goes to a vote, then the strong tier, then a person.",
    )
    semantic_route_margin: float = Field(
        default=0.006,
        ge=0,
        le=1,
        description="The nearest routing examples decide a ticket's intent when its score beats the runner-up's by this "
        "(embedding scores bunch together: tune it per embedding model); otherwise the model tiers route it.",
    )
    min_route_accuracy: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="A routing tier whose measured accuracy on the labelled routing sample is under this is not "
        "trusted: its routes and votes are ignored and the ticket moves on to the next tier or a person.",
    )
    agent_max_iterations: int = AgentLimits.model_fields["max_iterations"]
    agent_max_tool_calls: int = AgentLimits.model_fields["max_tool_calls"]
    agent_max_tokens: int = AgentLimits.model_fields["max_tokens"]
    agent_max_seconds: float = AgentLimits.model_fields["max_seconds"]
    max_workers: int = Field(
        default=4, ge=1, description="Sub-questions of a multi-part ticket answered at once (more are merged)."
    )
    max_refinement_rounds: int = Field(default=2, ge=0, description="Critique-and-revise rounds per reply.")
    memory_budget_chars: int = Field(
        default=2_000, ge=200, description="History a reply prompt may carry; older turns are summarized."
    )
    memory_window_turns: int = Field(default=4, ge=1, description="Most recent turns always kept verbatim.")
    refund_limit_eur: float = SupportDeskResource.model_fields["refund_limit_eur"]
    agent_mcp_servers_json: str = Field(
        default="[]",
        description='JSON list of MCP servers whose tools the reply agent may also call: [{"name", "command": [...]} or {"name", "url"}].',
    )

    def ticket_folders(self) -> dict[str, Path]:
        return {"samples": Path(self.tickets_dir), "inbox": Path(self.ticket_inbox_dir)}
