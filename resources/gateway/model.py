"""The model resource: the gateway every chat call of the pipeline goes through.

One OpenAI-compatible code path serves OpenAI, vLLM, Ollama, llama.cpp and the
embedded local server, so what is tested against the local or a test server is what
runs against a hosted provider. Around each call: a response cache, a fallback chain
of endpoints per tier, retries with backoff that honour Retry-After (tenacity; the
openai client's own retries are off so the two never multiply), a timeout, and a
circuit breaker per endpoint. Callers ask for a pydantic model and get a validated
instance back, or an error that says what was wrong; they never see raw model text.

Validation belongs to the endpoint that answered: an invalid answer is re-asked on the
same endpoint, an endpoint whose answers stay invalid counts as failed (its breaker
too) and the chain moves on, and only an answer that validated is ever cached. Error
text passes through `redact` before it is stored or raised, since providers echo keys.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Generic, Literal, NamedTuple, Sequence, TypeVar

import openai
from dagster import Config, ConfigurableResource
from openai import OpenAI
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from resources.gateway.circuit_breaker import CircuitBreaker
from resources.gateway.ledger import RETRYABLE_STATUS, CallLedger, CallRecord, is_outage
from resources.gateway.local_model import EMBEDDED_SERVER, LOCAL_MODEL_NAME, LocalServerSettings
from resources.gateway.request_deadlines import EndpointPace
from resources.gateway.response_cache import CachedResponse, ResponseCache, request_key
from resources.gateway.traces import TraceStore
from resources.secrets import redact, reveal

if TYPE_CHECKING:
    from dagster import AssetExecutionContext, OpExecutionContext

    from resources.gateway.model_session import ModelSession

Tier = Literal["fast", "strong"]
TraceRedaction = Literal["full", "hash", "none"]
T = TypeVar("T", bound=BaseModel)
Messages = list[dict[str, Any]]
INVALID_OUTPUT = "invalid output"


class ToolCall(BaseModel):
    """A function the model asked to call; `arguments` is the JSON text it wrote, parsed by the tool."""

    id: str
    name: str
    arguments: str = "{}"


class AgentTurn(BaseModel):
    """One assistant message of a tool-using conversation: text, tool calls, or both.

    Validated like any structured answer, so an empty message is re-asked, and cached
    as its JSON form, so an unchanged conversation replays without a call."""

    content: str = ""
    tool_calls: list[ToolCall] = []

    @model_validator(mode="after")
    def _not_empty(self) -> "AgentTurn":
        if not self.content.strip() and not self.tool_calls:
            raise ValueError("the answer holds neither text nor a tool call")
        return self

    def as_message(self) -> dict[str, Any]:
        """The turn as the assistant message the conversation continues from."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


class ToolStep(BaseModel):
    """A validated turn, with what it cost, for an agent's caps and records."""

    turn: AgentTurn
    trace_id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False


def _message_content(response: Any) -> str:
    """A structured answer is the message's text."""
    return (response.choices[0].message.content or "") if response.choices else ""


def _turn_json(response: Any) -> str:
    """A tool-using answer is its text and tool calls, as the JSON of an `AgentTurn`."""
    if not response.choices:
        return ""
    message = response.choices[0].message
    calls = [
        {"id": call.id, "name": call.function.name, "arguments": call.function.arguments or "{}"}
        for call in (message.tool_calls or [])
        if getattr(call, "function", None) is not None
    ]
    return json.dumps({"content": message.content or "", "tool_calls": calls})


class _Request(NamedTuple, Generic[T]):
    """One request as the gateway carries it from a caller to the endpoints: one value, so that
    waiting for an identical request in flight and sending it take the same thing."""

    messages: Messages
    schema: type[T]
    parameters: dict[str, Any]
    extract: Callable[[Any], str]  # the answer's text, from the endpoint's response
    tier: Tier
    ledger: CallLedger | None
    partition: str
    sample: int = 0


class EndpointFailure(BaseModel):
    """Why one endpoint of the chain gave no valid answer to one request."""

    endpoint: str
    model: str
    kind: str  # as `CallRecord.error_kind`: "503", "timeout", "circuit open", "invalid output", ...
    detail: str  # redacted
    attempts: int = 0  # requests sent to the endpoint (retries and re-asks included)
    last_answer: str = Field(default="", repr=False)

    @property
    def outage(self) -> bool:
        return is_outage(self.kind)

    def __str__(self) -> str:
        return f"{self.endpoint} ({self.model}): {self.detail}"


class ModelCallError(RuntimeError):
    """No endpoint of the chain gave a valid answer; `failures` says why, per endpoint, and
    `outage` whether none answered at all (which a run report should name as an outage)."""

    def __init__(self, tier: str, failures: Sequence[EndpointFailure], subject: str = ""):
        self.tier = tier
        self.failures = list(failures)
        what = "outage" if self.outage else "invalid output" if self.invalid_output else "failed"
        reasons = "; ".join(str(f) for f in self.failures) or "no endpoint configured"
        super().__init__(f"{subject}all endpoints failed for tier {tier!r} ({what}): {reasons}")

    @property
    def outage(self) -> bool:
        """No endpoint answered: transport errors, 5xx, timeouts, exhausted 429s, open circuits."""
        return bool(self.failures) and all(f.outage for f in self.failures)

    @property
    def invalid_output(self) -> bool:
        """Some endpoint answered, but its answers stayed invalid after every re-ask."""
        return any(f.kind == INVALID_OUTPUT for f in self.failures)

    def __reduce__(self):
        return (type(self), (self.tier, self.failures))


# Assets that call models share this Dagster concurrency pool, so that across runs no more
# of them hit the endpoints at once than `dagster instance concurrency set model_endpoints N`
# allows (unlimited until set; `ai-pipelines stack` sets it from AI_PIPELINES_MODEL_POOL_LIMIT).
MODEL_POOL = "model_endpoints"


class BudgetExceededError(RuntimeError):
    """The run has spent its model budget; further calls are refused and the step fails."""


class StructuredOutputError(ModelCallError):
    """No valid answer, and at least one endpoint answered but stayed invalid for the schema after every re-ask."""

    def __init__(self, tier: str, failures: Sequence[EndpointFailure], schema: str = ""):
        super().__init__(tier, failures, subject=f"{schema}: no valid answer; " if schema else "")
        self.schema = schema
        invalid = [f for f in self.failures if f.kind == INVALID_OUTPUT]
        self.attempts = sum(f.attempts for f in invalid)
        self.last_error = invalid[-1].detail if invalid else ""
        self.last_answer = invalid[-1].last_answer if invalid else ""

    def __reduce__(self):
        return (type(self), (self.tier, self.failures, self.schema))


class Endpoint(Config):
    """One OpenAI-compatible endpoint; an empty base_url is the embedded local model.

    `ModelResource` takes its primary endpoint's fields from these declarations, so the
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

    def model_for(self, tier: Tier) -> str:
        name = self.fast_model if tier == "fast" else self.strong_model
        return name or self.fast_model or self.strong_model or LOCAL_MODEL_NAME


@functools.lru_cache(maxsize=512)
def response_format_for(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `json_schema` response format; llama.cpp turns it into a grammar.

    Built once per schema class (pydantic rebuilds the JSON schema on every call, about
    140 us, on every model call); callers treat it as read-only."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False},
    }


def reasks_for(schema: type[BaseModel], default: int) -> int:
    """Times an invalid answer for `schema` is asked again: the gateway's `max_reasks`, or fewer when
    the schema declares `max_reasks: ClassVar[int]` (an answer a grammar already holds to its schema
    that is still invalid tends to come back the same, so asking again spends calls on nothing)."""
    declared = getattr(schema, "max_reasks", None)
    return min(default, declared) if isinstance(declared, int) else default


def _validation_message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in error.errors()[:5])
    return str(error)


def error_kind(error: BaseException) -> str:
    """How a call failed, in the words a run report uses: the status code, or the transport failure."""
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection error"
    if isinstance(error, openai.APIStatusError):
        return str(error.status_code)
    return type(error).__name__


def is_retryable(error: BaseException) -> bool:
    """Timeouts, lost connections, 5xx and 408/409/429 are worth another try; other 4xx are not."""
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code >= 500 or error.status_code in RETRYABLE_STATUS
    return False


def retry_after_seconds(error: BaseException | None) -> float | None:
    if isinstance(error, openai.APIStatusError):
        value = error.response.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None
    return None


class ModelResource(ConfigurableResource):
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

    _chain: list[Endpoint] | None = PrivateAttr(default=None)
    _clients: dict[str, OpenAI] = PrivateAttr(default_factory=dict)
    _breakers: dict[str, CircuitBreaker] = PrivateAttr(default_factory=dict)
    _bulkheads: dict[str, threading.BoundedSemaphore] = PrivateAttr(default_factory=dict)
    _paces: dict[str, EndpointPace] = PrivateAttr(default_factory=dict)
    _in_flight: dict[str, threading.Event] = PrivateAttr(default_factory=dict)
    _stayed_invalid: Any = PrivateAttr(default_factory=weakref.WeakKeyDictionary)
    _cache: ResponseCache | None = PrivateAttr(default=None)
    _traces: TraceStore | None = PrivateAttr(default=None)
    _spans: Any = PrivateAttr(default=None)
    _spent: dict[str, float] = PrivateAttr(default_factory=lambda: {"usd": 0.0, "tokens": 0})
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def chain(self) -> list[Endpoint]:
        """The primary endpoint, then the fallbacks; built once (config objects are not free)."""
        if self._chain is None:
            self._chain = self._build_chain()
        return self._chain

    def _build_chain(self) -> list[Endpoint]:
        primary = Endpoint(
            name="primary",
            base_url=self.base_url,
            api_key=self.api_key,
            fast_model=self.fast_model,
            strong_model=self.strong_model,
            timeout_seconds=self.timeout_seconds,
            max_input_chars=self.max_input_chars,
        )
        return [primary, *self.fallbacks]

    def model_for(self, tier: Tier) -> str:
        return self.chain()[0].model_for(tier)

    def endpoint(self) -> str:
        """The primary endpoint's URL (starting the embedded server if that is the primary)."""
        return self._url(self.chain()[0])

    def breaker_states(self) -> dict[str, str]:
        with self._lock:
            return {name: breaker.state for name, breaker in self._breakers.items()}

    def _url(self, endpoint: Endpoint) -> str:
        if endpoint.base_url:
            return endpoint.base_url.rstrip("/")
        return EMBEDDED_SERVER.base_url(
            LocalServerSettings(
                parallel_slots=max(1, self.max_concurrency),
                context_per_slot=self.local_model_context_per_slot,
                threads=self.local_model_threads,
                verbosity=self.local_model_verbosity,
            )
        )

    def _client(self, endpoint: Endpoint) -> OpenAI:
        with self._lock:
            if endpoint.name not in self._clients:
                self._clients[endpoint.name] = OpenAI(
                    base_url=self._url(endpoint),
                    api_key=reveal(endpoint.api_key) or "not-needed",
                    timeout=endpoint.timeout_seconds or self.deadline_floor_seconds,  # each call sets its own
                    max_retries=0,  # tenacity retries; the client's own would multiply them
                )
            return self._clients[endpoint.name]

    def _breaker(self, endpoint: Endpoint) -> CircuitBreaker:
        with self._lock:
            return self._breakers.setdefault(
                endpoint.name, CircuitBreaker(self.breaker_failures, self.breaker_cooldown_seconds)
            )

    def _pace(self, endpoint: Endpoint) -> EndpointPace:
        with self._lock:
            return self._paces.setdefault(
                endpoint.name, EndpointPace(self.start_tokens_per_s, self.deadline_floor_seconds)
            )

    def endpoint_paces(self) -> dict[str, float]:
        """The measured tokens/s of each endpoint that takes its deadlines from the work."""
        with self._lock:
            return {name: round(pace.tokens_per_s, 2) for name, pace in self._paces.items()}

    def _bulkhead(self, endpoint: Endpoint) -> threading.BoundedSemaphore:
        with self._lock:
            limit = endpoint.max_concurrency or self.max_concurrency
            return self._bulkheads.setdefault(endpoint.name, threading.BoundedSemaphore(max(1, limit)))

    def _response_cache(self) -> ResponseCache | None:
        with self._lock:
            if self._cache is None and self.cache_path:
                self._cache = ResponseCache(reveal(self.cache_path))
            return self._cache

    def _trace_store(self) -> TraceStore | None:
        with self._lock:
            if self._traces is None and self.trace_path:
                self._traces = TraceStore(reveal(self.trace_path), self.trace_redaction)
            return self._traces

    def trace_records(self, trace_ids: list[str]) -> list[dict[str, object]]:
        """The trace table rows of these calls (those the table still holds)."""
        store = self._trace_store()
        return store.get_many(trace_ids) if store else []

    def span_exporter(self):
        """The OpenTelemetry exporter, when an OTLP endpoint is configured."""
        with self._lock:
            if self._spans is None and self.otlp_endpoint:
                from resources.gateway.telemetry import SpanExporter

                self._spans = SpanExporter(self.otlp_endpoint)
            return self._spans

    def spent(self, run_id: str = "") -> dict[str, float]:
        """What has been spent ("usd", "tokens"). With a run id and a trace store, the run's
        total over every process and host that records to the store: each step process of a
        multiprocess or celery run has its own resource instance, but all of them write every
        call there with the run id. Otherwise what this instance spent."""
        store = self._trace_store() if run_id else None
        if store is not None:
            shared = store.run_spend(run_id)
            return {"usd": shared.usd, "tokens": shared.tokens}
        with self._lock:
            return dict(self._spent)

    def _charge(self, record: CallRecord) -> None:
        with self._lock:
            self._spent["usd"] += record.cost_usd
            self._spent["tokens"] += record.prompt_tokens + record.completion_tokens

    def _check_budget(self, run_id: str = "") -> None:
        """Refuse a call once the run has spent its budget: the run's total in the trace store
        when the call belongs to a run (see `spent`), this instance's own spend otherwise.
        Nothing is read when no budget is set."""
        if not (self.budget_usd or self.budget_tokens):
            return
        spent = self.spent(run_id)
        over_usd = self.budget_usd and spent["usd"] >= self.budget_usd
        over_tokens = self.budget_tokens and spent["tokens"] >= self.budget_tokens
        if over_usd or over_tokens:
            whose = (
                f"run {run_id} (every step recording to the trace store)"
                if run_id and self.trace_path
                else "this process"
            )
            raise BudgetExceededError(
                f"model budget exhausted: {whose} spent {spent['tokens']:.0f} tokens and "
                f"${spent['usd']:.4f} (budget: {self.budget_tokens or 'unlimited'} tokens, "
                f"${self.budget_usd or 'unlimited'}); no further model calls in this run"
            )

    def cost(self, tier: str, prompt_tokens: int, completion_tokens: int) -> float:
        """What these tokens cost on `tier` at the configured prices (the strong tier may have its own)."""
        strong = tier == "strong"
        input_price = (strong and self.strong_input_price_per_mtok) or self.input_price_per_mtok
        output_price = (strong and self.strong_output_price_per_mtok) or self.output_price_per_mtok
        return (prompt_tokens * input_price + completion_tokens * output_price) / 1_000_000

    def _wait(self, retry_state) -> float:
        backoff = wait_exponential_jitter(initial=self.backoff_initial_seconds, max=self.backoff_max_seconds)
        hinted = retry_after_seconds(retry_state.outcome.exception() if retry_state.outcome else None)
        return min(hinted, self.backoff_max_seconds) if hinted is not None else backoff(retry_state)

    def _call_endpoint(self, endpoint: Endpoint, body: dict[str, Any], record: CallRecord) -> Any:
        """One call to one endpoint, with retries; `record.attempt` counts the tries, failed or not.

        An endpoint with a timeout keeps it; one without gets a deadline per try from the
        request's budget and its measured pace (see `request_deadlines`), and each answer
        it gives refines that pace."""
        client = self._client(endpoint)
        pace = None if endpoint.timeout_seconds else self._pace(endpoint)
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body["messages"])
        record.attempt = 0
        for attempt in Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            reraise=True,
        ):
            with attempt:
                record.attempt += 1
                if pace is None:
                    return client.chat.completions.create(model=record.model, **body)
                timeout = pace.deadline(prompt_chars, int(body.get("max_tokens") or 0), record.attempt)
                started = time.perf_counter()
                response = client.chat.completions.create(model=record.model, timeout=timeout, **body)
                if response.usage is not None:
                    pace.record(
                        response.usage.prompt_tokens, response.usage.completion_tokens, time.perf_counter() - started
                    )
                return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _secrets(self) -> list[str]:
        return [self.api_key, *(e.api_key for e in self.fallbacks)]

    def _ask(
        self,
        endpoint: Endpoint,
        messages: Messages,
        schema: type[T],
        parameters: dict[str, Any],
        ledger: CallLedger | None,
        label: dict[str, Any],
        extract: Callable[[Any], str] = _message_content,
    ) -> tuple[T, CallRecord, str] | EndpointFailure:
        """One endpoint: a validated answer, re-asking it with the validation error up to
        `max_reasks` times, or why it gave none (its calls are recorded either way)."""
        conversation = list(messages)
        sent = 0
        reasks = reasks_for(schema, self.max_reasks)
        for reask in range(reasks + 1):
            self._check_budget(ledger.run_id if ledger is not None else "")
            record = CallRecord(model=endpoint.model_for(label["tier"]), endpoint=endpoint.name, reask=reask, **label)
            started = time.perf_counter()
            try:
                with self._bulkhead(endpoint):
                    response = self._call_endpoint(endpoint, {"messages": conversation, **parameters}, record)
            except openai.OpenAIError as exc:
                sent += record.attempt
                record.latency_s = time.perf_counter() - started
                record.error_kind = error_kind(exc)
                record.error = redact(f"{type(exc).__name__}: {exc}", self._secrets())
                self._record(ledger, record, conversation, "")
                return EndpointFailure(
                    endpoint=endpoint.name,
                    model=record.model,
                    kind=record.error_kind,
                    detail=record.error,
                    attempts=sent,
                )
            sent += record.attempt
            record.latency_s = time.perf_counter() - started
            if response.usage is not None:
                record.prompt_tokens = response.usage.prompt_tokens
                record.completion_tokens = response.usage.completion_tokens
            record.cost_usd = self.cost(record.tier, record.prompt_tokens, record.completion_tokens)
            self._charge(record)
            content = extract(response)
            try:
                value = schema.model_validate(json.loads(content))
            except (json.JSONDecodeError, ValidationError) as exc:
                problem = redact(_validation_message(exc), self._secrets())
                last = reask == reasks
                record.error_kind = INVALID_OUTPUT
                record.error = (
                    f"invalid output after {reask + 1} attempts: {problem}" if last else f"invalid output: {problem}"
                )
                self._record(ledger, record, conversation, content)
                if last:
                    return EndpointFailure(
                        endpoint=endpoint.name,
                        model=record.model,
                        kind=INVALID_OUTPUT,
                        detail=record.error,
                        attempts=sent,
                        last_answer=content,
                    )
                conversation = conversation + [
                    {"role": "assistant", "content": content},
                    {
                        "role": "user",
                        "content": f"That answer was invalid ({problem}). "
                        "Answer again with JSON that matches the schema exactly.",
                    },
                ]
                continue
            self._record(ledger, record, conversation, content)
            return value, record, content
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _valid_cached(cache: ResponseCache | None, key: str, schema: type[T]) -> tuple[T, CachedResponse] | None:
        """A cached answer that still validates; anything else is ignored (and overwritten by the next valid one)."""
        cached = cache.get(key) if cache else None
        if cached is None:
            return None
        try:
            return schema.model_validate(json.loads(cached.content)), cached
        except (json.JSONDecodeError, ValidationError):
            return None

    def _record(self, ledger: CallLedger | None, record: CallRecord, messages: Messages, response: str) -> None:
        if ledger is not None:
            ledger.add(record)
        run_id, asset = (ledger.run_id, ledger.asset) if ledger else ("", "")
        traces = self._trace_store()
        if traces is not None:
            traces.add(record, messages, response, run_id, asset)
        spans = self.span_exporter()
        if spans is not None:
            spans.export(record, run_id, asset)

    def session(
        self, context: AssetExecutionContext | OpExecutionContext, asset: str = "", compare_tiers: bool = False
    ) -> ModelSession:
        """The calls of one asset computation, with their bookkeeping: `with model.session(context) as llm:`
        gives the call methods below without `ledger=`, records them under the run and the asset,
        and writes the usage metadata when the block ends (see `ModelSession`)."""
        from resources.gateway.model_session import ModelSession  # it imports this module

        return ModelSession(self, context, asset=asset, compare_tiers=compare_tiers)

    def structured(self, messages: Messages, schema: type[T], **options: Any) -> T:
        """Ask for a `schema` instance (options as for `traced_structured`)."""
        return self.traced_structured(messages, schema, **options)[0]

    def traced_structured(
        self,
        messages: Messages,
        schema: type[T],
        *,
        tier: Tier = "fast",
        max_tokens: int = 256,
        ledger: CallLedger | None = None,
        partition: str = "",
        temperature: float | None = None,
        sample: int = 0,
    ) -> tuple[T, str]:
        """A validated `schema` instance and the trace id of the call that produced it.

        Each endpoint of the chain in turn: an invalid answer is re-asked there with its
        validation error, up to `max_reasks` times; an endpoint that failed (errors after
        retries, or answers that stayed invalid) counts against its breaker and the next
        one is tried. Raises `ModelCallError` (`StructuredOutputError` when some endpoint
        answered invalidly) with the reason per endpoint.

        `temperature` overrides the resource's for this request; `sample` numbers
        otherwise identical requests (the samples of a vote), so each is cached apart.
        """
        parameters = {
            "response_format": response_format_for(schema),
            "max_tokens": max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
        }
        value, record = self._complete(
            _Request(messages, schema, parameters, _message_content, tier, ledger, partition, sample)
        )
        return value, record.trace_id

    def tool_step(
        self,
        messages: Messages,
        tools: Sequence[dict[str, Any]],
        *,
        tier: Tier = "strong",
        max_tokens: int = 512,
        ledger: CallLedger | None = None,
        partition: str = "",
    ) -> ToolStep:
        """One turn of a tool-using conversation (OpenAI function calling), on the same
        reliable path as structured answers: cache, retries, fallback, breakers, budget,
        a trace row. The caller runs the tools and continues the conversation."""
        parameters = {"tools": list(tools), "max_tokens": max_tokens, "temperature": self.temperature}
        turn, record = self._complete(_Request(messages, AgentTurn, parameters, _turn_json, tier, ledger, partition))
        return ToolStep(
            turn=turn,
            trace_id=record.trace_id,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cache_hit=record.cache_hit,
        )

    def _request_key(self, request: _Request[Any]) -> str:
        identity = {
            "models": [e.model_for(request.tier) for e in self.chain()],
            "messages": request.messages,
            **request.parameters,
        }
        return request_key({**identity, "sample": request.sample} if request.sample else identity)

    def _complete(self, request: _Request[T]) -> tuple[T, CallRecord]:
        """A request is sent once however many ask it at the same time: identical requests
        (two drafts that hold the same sentence, say) wait for the first and take its answer
        from the cache, as they would had they come a moment later. Without a cache each goes
        its own way; after a failed first, the next one tries for itself."""
        if self._response_cache() is None:
            return self._complete_once(request)
        key = self._request_key(request)
        with self._lock:
            running = self._in_flight.get(key)
            if running is None:
                self._in_flight[key] = threading.Event()
        if running is not None:
            running.wait()
            return self._complete_once(request)
        try:
            return self._complete_once(request)
        finally:
            with self._lock:
                self._in_flight.pop(key).set()

    def _complete_once(self, request: _Request[T]) -> tuple[T, CallRecord]:
        messages, schema, parameters, extract, tier, ledger, partition, _ = request
        chain = self.chain()
        key = self._request_key(request)
        label = {"tier": tier, "request_id": uuid.uuid4().hex, "partition": partition}
        cache = self._response_cache()
        hit = self._valid_cached(cache, key, schema)
        if hit is not None:
            value, cached = hit
            record = CallRecord(model=cached.model, endpoint=cached.endpoint, cache_hit=True, **label)
            self._record(ledger, record, messages, cached.content)
            return value, record
        deterministic = ledger is not None and parameters.get("temperature") == 0
        known = self._stayed_invalid.get(ledger, {}).get(key) if deterministic else None
        if known is not None:
            # At temperature 0 the same conversation gets the same answer: asking again
            # would spend the calls and re-asks that already failed on nothing new.
            skipped = CallRecord(
                model=known[-1].model,
                endpoint=known[-1].endpoint,
                attempt=0,
                error="invalid output: the same request stayed invalid earlier in this computation; not asked again",
                error_kind=INVALID_OUTPUT,
                **label,
            )
            self._record(ledger, skipped, messages, "")
            raise StructuredOutputError(tier, known, schema.__name__)
        failures: list[EndpointFailure] = []
        input_chars = sum(len(str(m.get("content") or "")) for m in messages)
        for position, endpoint in enumerate(chain):
            model_name = endpoint.model_for(tier)
            if endpoint.max_input_chars and input_chars > endpoint.max_input_chars:
                failures.append(
                    EndpointFailure(
                        endpoint=endpoint.name,
                        model=model_name,
                        kind="input too long",
                        detail=f"input of {input_chars} chars over its {endpoint.max_input_chars}",
                    )
                )
                continue
            breaker = self._breaker(endpoint)
            if not breaker.allow():
                skipped = CallRecord(
                    model=model_name,
                    endpoint=endpoint.name,
                    fallback=position > 0,
                    attempt=0,
                    error="circuit open",
                    error_kind="circuit open",
                    **label,
                )
                self._record(ledger, skipped, messages, "")
                failures.append(
                    EndpointFailure(
                        endpoint=endpoint.name, model=model_name, kind="circuit open", detail="circuit open"
                    )
                )
                continue
            outcome = self._ask(
                endpoint, messages, schema, parameters, ledger, {**label, "fallback": position > 0}, extract
            )
            if isinstance(outcome, EndpointFailure):
                # An endpoint that answers, however badly, is not down: invalid answers and
                # refused requests (4xx) count against its breaker only when a later endpoint
                # can take its requests, so a lone small model is never shut off for a run of
                # bad answers or one prompt too long for its context; only silence (refused
                # connections, 5xx, timeouts) opens the last endpoint's circuit.
                if outcome.outage or position < len(chain) - 1:
                    breaker.record_failure()
                else:  # it answered, so it is up; this also settles a half-open probe
                    breaker.record_success()
                failures.append(outcome)
                continue
            breaker.record_success()
            value, record, content = outcome
            if cache:
                cache.put(
                    key,
                    CachedResponse(
                        content=content,
                        model=record.model,
                        endpoint=endpoint.name,
                        prompt_tokens=record.prompt_tokens,
                        completion_tokens=record.completion_tokens,
                    ),
                )
            return value, record
        if any(f.kind == INVALID_OUTPUT for f in failures):
            if deterministic and all(f.kind == INVALID_OUTPUT for f in failures):
                with self._lock:
                    self._stayed_invalid.setdefault(ledger, {})[key] = failures
            raise StructuredOutputError(tier, failures, schema.__name__)
        raise ModelCallError(tier, failures)

    def map_structured(self, requests: Sequence[Messages], schema: type[T], **options: Any) -> list[T | Exception]:
        """Many requests at bounded concurrency; one failure never loses the others."""
        return [value for value, _ in self.map_traced_structured(requests, schema, **options)]

    def map_traced_structured(
        self,
        requests: Sequence[Messages],
        schema: type[T],
        *,
        tier: Tier = "fast",
        max_tokens: int = 256,
        ledger: CallLedger | None = None,
        on_done: Callable[[], None] | None = None,
        partitions: Sequence[str] | None = None,
    ) -> list[tuple[T | Exception, str]]:
        """`map_structured` with each accepted answer's trace id ("" for failures).

        `partitions`, parallel to `requests`, labels each request's records, so that
        `ledger.summary(partition=...)` gives one partition's own figures.
        `on_done` is called as each request finishes (for progress). A spent budget is
        not a per-item failure: it propagates and stops the step.
        """
        labels = list(partitions) if partitions is not None else [""] * len(requests)
        if len(labels) != len(requests):
            raise ValueError(f"{len(labels)} partitions for {len(requests)} requests")

        def one(item: tuple[Messages, str]) -> tuple[T | Exception, str]:
            messages, partition = item
            try:
                return self.traced_structured(
                    messages, schema, tier=tier, max_tokens=max_tokens, ledger=ledger, partition=partition
                )
            except ModelCallError as exc:
                return exc, ""
            finally:
                if on_done is not None:
                    on_done()

        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            return list(pool.map(one, zip(requests, labels)))
