"""The gateway's declared settings: endpoints, tiers, limits, prices and where state is kept.

Kept apart from what the gateway holds at run time (clients, breakers, pools, caches, the
local server), so that a setting is read in one place, and a fingerprint, a calibration key
or a price is a function of what was declared, never of what a run happened to start.
`ModelResource` is these settings as a Dagster resource; the fields' descriptions are what
`Settings` and `.env.example` show.
"""

from __future__ import annotations

from typing import Literal

from dagster import Config
from pydantic import Field

from resources.gateway.local_model import LOCAL_MODEL_NAME, LocalServerSettings

Tier = Literal["fast", "strong"]
TraceRedaction = Literal["full", "hash", "none"]
Period = Literal["day", "month"]
BatchFailure = Literal["report", "live"]


class SpendCap(Config):
    """A limit on what calls may spend in a calendar period (UTC), shared by every run, process
    and sensor that records to the gateway's state store; a call that would break it is refused
    before it is sent."""

    name: str = Field(description="How refusals and `ai-pipelines spend` name the cap.")
    period: Period = Field(default="day", description="The calendar period it resets with (UTC): day or month.")
    usd: float = Field(default=0.0, ge=0, description="USD the period may spend; 0 = no USD limit.")
    tokens: int = Field(default=0, ge=0, description="Tokens (prompt and completion) the period may use; 0 = none.")
    tier: str = Field(default="", description="Only calls of this tier (fast or strong) count; empty = every tier.")
    endpoint: str = Field(default="", description="Only calls to this endpoint (by name) count; empty = every one.")


class Endpoint(Config):
    """One OpenAI-compatible endpoint; an empty base_url is the embedded local model.

    `GatewayConfig` takes its primary endpoint's fields from these declarations, so the
    primary and a fallback share one default, bound and description per field."""

    name: str
    base_url: str = Field(
        default="", description="OpenAI-compatible endpoint (.../v1); empty = the embedded local model."
    )
    api_key: str = Field(
        default="", description="API key of the endpoint, given to Dagster as an EnvVar (a name, never the value)."
    )
    fast_model: str = Field(
        default="", description="Model of the fast tier (classification, extraction); empty = the strong tier's."
    )
    strong_model: str = Field(
        default="", description="Model of the strong tier (drafting, judging); empty = the fast tier's."
    )
    timeout_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Seconds one request may take before it counts as a timeout; 0 = a deadline from the work: "
        "the request's prompt and max_tokens at the endpoint's measured tokens/s, never under the floor.",
    )
    max_concurrency: int = Field(
        default=0, ge=0, description="Requests in flight at once (bulkhead); 0 = the resource's max_concurrency."
    )
    max_input_chars: int = Field(
        default=0,
        ge=0,
        description="Longer prompts skip this endpoint (route them to a long-context one); 0 = no limit.",
    )
    context_window_tokens: int = Field(
        default=0,
        ge=0,
        description="The endpoint's context window in tokens: a request it refuses as too long goes to a later "
        "endpoint with a larger one; 0 = not declared (such an endpoint is never chosen for a longer request).",
    )
    tokens_per_minute: int = Field(
        default=0,
        ge=0,
        description="Tokens per minute sent to this endpoint by every run and process sharing the state store "
        "(a call waits for room); 0 = no limit.",
    )
    batch: bool = Field(
        default=False,
        description="The endpoint has OpenAI's batch API (/v1/files, /v1/batches): bulk materializations may go "
        "through it at the batch price.",
    )
    batch_price_ratio: float = Field(
        default=0.5, gt=0, le=1, description="The batch price as a share of the live price (OpenAI: half)."
    )

    def model_for(self, tier: Tier) -> str:
        name = self.fast_model if tier == "fast" else self.strong_model
        return name or self.fast_model or self.strong_model or LOCAL_MODEL_NAME


class GatewayConfig(Config):
    """Chat models by task tier over a fallback chain of OpenAI-compatible endpoints.

    The primary endpoint is given by the flat fields (leave `base_url` empty for the
    embedded local model, started on first use); `fallbacks` follow it in order.
    """

    base_url: str = Endpoint.model_fields["base_url"]
    api_key: str = Endpoint.model_fields["api_key"]
    fast_model: str = Endpoint.model_fields["fast_model"]
    strong_model: str = Endpoint.model_fields["strong_model"]
    timeout_seconds: float = Endpoint.model_fields["timeout_seconds"]
    max_input_chars: int = Endpoint.model_fields["max_input_chars"]
    context_window_tokens: int = Endpoint.model_fields["context_window_tokens"]
    tokens_per_minute: int = Endpoint.model_fields["tokens_per_minute"]
    batch: bool = Endpoint.model_fields["batch"]
    batch_price_ratio: float = Endpoint.model_fields["batch_price_ratio"]
    fallbacks: list[Endpoint] = Field(
        default=[], description="Endpoints tried in order when the primary fails or its circuit is open."
    )
    deadline_floor_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Shortest deadline of a request to an endpoint whose timeout is 0 (a deadline from the work).",
    )
    start_tokens_per_s: float = Field(
        default=4.0,
        gt=0,
        description="Pace assumed for an endpoint whose timeout is 0 until its answers are measured; "
        "low, so that the first deadlines are long.",
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        description="Retries per endpoint on 429, 5xx, timeouts and lost connections (Retry-After is honoured).",
    )
    backoff_initial_seconds: float = Field(
        default=0.5, ge=0, description="First wait before a retry; it grows exponentially, with jitter."
    )
    backoff_max_seconds: float = Field(
        default=30.0, ge=0, description="Longest wait before a retry, also when Retry-After asks for more."
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive failures that open an endpoint's circuit breaker."
    )
    breaker_cooldown_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long an open circuit skips its endpoint before one probe call is let through.",
    )
    cache_path: str = Field(
        default="", description="Response cache, a SQLite file or a Postgres URL; empty = no cache."
    )
    trace_path: str = Field(
        default="", description="Trace table of every call, a SQLite file or a Postgres URL; empty = none."
    )
    state_path: str = Field(
        default="",
        description="Spend caps, rate-limit windows, submitted batches and tier outcomes, shared by every run, "
        "process and sensor: a SQLite file or a Postgres URL; empty = none (caps, batches and learned routes "
        "need it).",
    )
    spend_caps: list[SpendCap] = Field(
        default=[], description="Limits per period (day, month), per tier or endpoint, in USD and tokens."
    )
    batch_min_requests: int = Field(
        default=100,
        ge=1,
        description="A materialization with at least this many uncached requests for one tier sends them through "
        "a batch-capable endpoint's batch API, when its step allows batches.",
    )
    batch_completion_window: str = Field(
        default="24h", description="The completion window a batch is submitted with (OpenAI accepts 24h)."
    )
    batch_on_failure: BatchFailure = Field(
        default="report",
        description="An expired, cancelled or failed batch: report it and leave the asset waiting for a person "
        "(report), or ask its unanswered requests live (live).",
    )
    content_policy_endpoint: str = Field(
        default="",
        description="The endpoint (by name) a request refused by a content policy goes to; empty = the refusal "
        "fails the request.",
    )
    trace_redaction: TraceRedaction = Field(
        default="full", description="Keep prompts and responses in the trace table in full, as hashes, or not at all."
    )
    otlp_endpoint: str = Field(
        default="", description="OTLP/gRPC collector for model-call spans, e.g. http://127.0.0.1:4317; empty = off."
    )
    budget_usd: float = Field(
        default=0.0,
        ge=0,
        description='Per-run spend limit; a run that reaches it stops with "model budget exhausted"; 0 = none.',
    )
    budget_tokens: int = Field(default=0, ge=0, description="Per-run token limit; 0 = none.")
    max_reasks: int = Field(
        default=2, ge=0, description="Times an answer that fails its schema is asked again on the same endpoint."
    )
    max_concurrency: int = Field(
        default=4,
        ge=1,
        description="Requests in flight at once per endpoint (bulkhead); also the embedded model's parallel slots.",
    )
    temperature: float = Field(
        default=0.0, ge=0, le=2, description="Sampling temperature, unless a call sets its own (votes do)."
    )
    input_price_per_mtok: float = Field(
        default=0.0, ge=0, description="USD per million prompt tokens, for costs and budgets."
    )
    output_price_per_mtok: float = Field(
        default=0.0, ge=0, description="USD per million completion tokens, for costs and budgets."
    )
    strong_input_price_per_mtok: float = Field(
        default=0.0, ge=0, description="The strong tier's prompt price when it differs; 0 = the tiers' prompt price."
    )
    strong_output_price_per_mtok: float = Field(
        default=0.0,
        ge=0,
        description="The strong tier's completion price when it differs; 0 = the tiers' completion price.",
    )
    local_model_context_per_slot: int = Field(
        default=2048, ge=256, description="Embedded model: context tokens per parallel slot (slots = max_concurrency)."
    )
    local_model_threads: int = Field(
        default=0,
        ge=0,
        description="Embedded model: CPU threads; 0 = chosen at start: the cores this process may use, less "
        "those busy (load average) and one for the pipeline's own work, at least 1.",
    )
    local_model_verbosity: int = Field(
        default=-1,
        ge=-1,
        description="Embedded model: llama.cpp log verbosity (it logs every request above -1); -1 = silent.",
    )

    def chain(self) -> list[Endpoint]:
        """The primary endpoint, then the fallbacks, in the order a request tries them."""
        primary = Endpoint(
            name="primary",
            base_url=self.base_url,
            api_key=self.api_key,
            fast_model=self.fast_model,
            strong_model=self.strong_model,
            timeout_seconds=self.timeout_seconds,
            max_input_chars=self.max_input_chars,
            context_window_tokens=self.context_window_tokens,
            tokens_per_minute=self.tokens_per_minute,
            batch=self.batch,
            batch_price_ratio=self.batch_price_ratio,
        )
        return [primary, *self.fallbacks]

    def model_for(self, tier: Tier) -> str:
        """The primary endpoint's model of `tier`: what a fingerprint names as the model."""
        return self.chain()[0].model_for(tier)

    def cost(self, tier: str, prompt_tokens: int, completion_tokens: int) -> float:
        """What these tokens cost on `tier` at the configured prices (the strong tier may have its own)."""
        strong = tier == "strong"
        input_price = (strong and self.strong_input_price_per_mtok) or self.input_price_per_mtok
        output_price = (strong and self.strong_output_price_per_mtok) or self.output_price_per_mtok
        return (prompt_tokens * input_price + completion_tokens * output_price) / 1_000_000

    def secrets(self) -> list[str]:
        """Every key of the chain, to cut from any text the gateway stores or raises."""
        return [self.api_key, *(e.api_key for e in self.fallbacks)]

    def local_server(self) -> LocalServerSettings:
        """How the embedded server is sized, when an endpoint of the chain is the embedded model."""
        return LocalServerSettings(
            parallel_slots=max(1, self.max_concurrency),
            context_per_slot=self.local_model_context_per_slot,
            threads=self.local_model_threads,
            verbosity=self.local_model_verbosity,
        )
