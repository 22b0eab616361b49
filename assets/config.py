"""What the stages are told: where documents come from, where outputs go, and the
quality thresholds that gate publication.

It is a resource so that the thresholds are visible on the Definitions in the UI and
can be set per deployment (the code location fills it from environment variables).
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

SAMPLE_CORPUS_DIR = Path(__file__).parent / "sample_corpus"


class PipelineConfig(ConfigurableResource):
    corpus_dir: str = Field(default=str(SAMPLE_CORPUS_DIR), description="Documents to ingest.")
    inbox_dir: str = Field(default="data/inbox", description="Extra documents dropped by users.")
    output_dir: str = Field(default="data/outputs", description="Where the digest is written.")
    state_url: str = Field(default="", description="Postgres URL for the approval log; empty = a SQLite file in output_dir.")
    index_collection: str = Field(default="chunks", description="Chroma collection of the index.")
    chunk_chars: int = Field(default=600, description="Target chunk size in characters.")
    max_document_bytes: int = Field(default=2_000_000, description="Larger files are quarantined.")
    max_document_chars: int = Field(default=100_000, description="A document's text is cut here; the cut is recorded.")
    max_chunk_chars: int = Field(default=1_500, description="Hard cap on a chunk; longer sentences are split at whitespace.")
    screen_with_model: bool = Field(
        default=False,
        description="Send sentences with weak prompt-injection cues to the fast tier; the heuristics always run.",
    )
    topics: list[str] = Field(default=[], description="Draft topics; empty = most-cited entities.")
    max_topics: int = 4
    claims_per_draft: int = 4
    max_quarantine_share: float = Field(default=0.25, description="Blocks when more documents fail to parse.")
    min_signal_validity: float = Field(default=0.8, description="Share of documents whose signals must validate.")
    decompose_claims: bool = Field(
        default=False, description="Split each written sentence into atomic claims (fast tier) before verifying it."
    )
    max_refinement_rounds: int = Field(
        default=2, description="Rounds in which an unsupported claim goes back to the strong tier to be revised."
    )
    max_unsupported_share: float = Field(default=0.4, description="Share of claims allowed to be not supported before summaries are blocked.")
    max_failed_request_share: float = Field(
        default=0.1, description="Share of a stage's model requests that may fail before its warning check fails."
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


SUPPORT_DESK_DIR = Path(__file__).parent / "support_desk"


class TriageConfig(ConfigurableResource):
    """What the support-triage stages are told: where tickets arrive, and the caps and
    thresholds of routing, the reply agent, refinement, memory and approval."""

    tickets_dir: str = Field(default=str(SUPPORT_DESK_DIR / "tickets"), description="Bundled tickets (partition keys samples/<file>).")
    ticket_inbox_dir: str = Field(default="data/ticket_inbox", description="Tickets dropped by users or a mail gateway (keys inbox/<file>).")
    max_ticket_bytes: int = Field(default=100_000, description="Larger ticket files are quarantined.")
    min_route_confidence: float = Field(default=0.7, description="Below this the classifier's route goes to a vote.")
    vote_samples: int = Field(default=3, description="Samples of the fast-tier classifier in a vote.")
    agent_max_iterations: int = Field(default=6, description="Model turns one reply agent may take.")
    agent_max_tool_calls: int = Field(default=8, description="Tool calls one reply agent may make.")
    agent_max_tokens: int = Field(default=12_000, description="Prompt and completion tokens one reply agent may spend.")
    agent_max_seconds: float = Field(default=120.0, description="Wall time one reply agent may take.")
    max_workers: int = Field(default=4, description="Sub-questions of a multi-part ticket answered at once (more are merged).")
    max_refinement_rounds: int = Field(default=2, description="Critique-and-revise rounds per reply.")
    memory_budget_chars: int = Field(default=2_000, description="History a reply prompt may carry; older turns are summarized.")
    memory_window_turns: int = Field(default=4, description="Most recent turns always kept verbatim.")
    refund_limit_eur: float = Field(default=250.0, description="No reply may promise more; larger refunds go to a supervisor.")
    agent_mcp_servers_json: str = Field(
        default="[]", description="JSON list of MCP servers whose tools the reply agent may also call (see McpServerConfig)."
    )

    def ticket_folders(self) -> dict[str, Path]:
        return {"samples": Path(self.tickets_dir), "inbox": Path(self.ticket_inbox_dir)}
