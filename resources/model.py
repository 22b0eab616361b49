"""The model resource: the gateway every chat call of the pipeline goes through.

One OpenAI-compatible code path serves OpenAI, vLLM, Ollama, llama.cpp and the
embedded local server, so what is tested against the local or a test server is what
runs against a hosted provider. Around each call: a response cache, a fallback chain
of endpoints per tier, retries with backoff that honour Retry-After (tenacity; the
openai client's own retries are off so the two never multiply), a timeout, and a
circuit breaker per endpoint. Callers ask for a pydantic model and get a validated
instance back, or an error that says what was wrong; they never see raw model text.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Literal, Sequence, TypeVar

import openai
from dagster import Config, ConfigurableResource
from openai import OpenAI
from pydantic import BaseModel, PrivateAttr, ValidationError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from resources.circuit_breaker import CircuitBreaker
from resources.ledger import CallLedger, CallRecord
from resources.local_model import EMBEDDED_SERVER, LOCAL_MODEL_NAME, LocalServerSettings
from resources.response_cache import CachedResponse, ResponseCache, request_key
from resources.traces import TraceStore

Tier = Literal["fast", "strong"]
T = TypeVar("T", bound=BaseModel)
Messages = list[dict[str, str]]
RETRYABLE_STATUS = {408, 409, 429}


class ModelCallError(RuntimeError):
    """Every endpoint of the chain failed or was skipped; the message lists why, per endpoint."""


class BudgetExceededError(RuntimeError):
    """The run has spent its model budget; further calls are refused and the step fails."""


class StructuredOutputError(RuntimeError):
    """The model's answers stayed invalid for the schema after every re-ask."""

    def __init__(self, schema: str, attempts: int, last_error: str, last_answer: str):
        self.schema = schema
        self.attempts = attempts
        self.last_error = last_error
        self.last_answer = last_answer
        super().__init__(f"{schema}: no valid answer after {attempts} attempt(s); last error: {last_error}")


class Endpoint(Config):
    """One OpenAI-compatible endpoint; an empty base_url is the embedded local model."""

    name: str
    base_url: str = ""
    api_key: str = ""
    fast_model: str = ""
    strong_model: str = ""
    timeout_seconds: float = 60.0
    max_concurrency: int = 0  # requests in flight at once (bulkhead); 0 = the resource's max_concurrency
    max_input_chars: int = 0  # longer prompts skip this endpoint (route them to a long-context one); 0 = no limit

    def model_for(self, tier: Tier) -> str:
        name = self.fast_model if tier == "fast" else self.strong_model
        return name or self.fast_model or self.strong_model or LOCAL_MODEL_NAME


def response_format_for(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `json_schema` response format; llama.cpp turns it into a grammar."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False},
    }


def _validation_message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in error.errors()[:5]
        )
    return str(error)


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

    base_url: str = ""
    api_key: str = ""
    fast_model: str = ""
    strong_model: str = ""
    timeout_seconds: float = 60.0
    max_input_chars: int = 0
    fallbacks: list[Endpoint] = []
    max_retries: int = 3
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    cache_path: str = ""
    trace_path: str = ""
    trace_redaction: Literal["full", "hash", "none"] = "full"
    otlp_endpoint: str = ""
    budget_usd: float = 0.0
    budget_tokens: int = 0
    max_reasks: int = 2
    max_concurrency: int = 4
    temperature: float = 0.0
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0

    _clients: dict[str, OpenAI] = PrivateAttr(default_factory=dict)
    _breakers: dict[str, CircuitBreaker] = PrivateAttr(default_factory=dict)
    _bulkheads: dict[str, threading.BoundedSemaphore] = PrivateAttr(default_factory=dict)
    _cache: ResponseCache | None = PrivateAttr(default=None)
    _traces: TraceStore | None = PrivateAttr(default=None)
    _spans: Any = PrivateAttr(default=None)
    _spent: dict[str, float] = PrivateAttr(default_factory=lambda: {"usd": 0.0, "tokens": 0})
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def chain(self) -> list[Endpoint]:
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
        return EMBEDDED_SERVER.base_url(LocalServerSettings(parallel_slots=max(1, self.max_concurrency)))

    def _client(self, endpoint: Endpoint) -> OpenAI:
        with self._lock:
            if endpoint.name not in self._clients:
                self._clients[endpoint.name] = OpenAI(
                    base_url=self._url(endpoint),
                    api_key=endpoint.api_key or "not-needed",
                    timeout=endpoint.timeout_seconds,
                    max_retries=0,  # tenacity retries; the client's own would multiply them
                )
            return self._clients[endpoint.name]

    def _breaker(self, endpoint: Endpoint) -> CircuitBreaker:
        with self._lock:
            return self._breakers.setdefault(
                endpoint.name, CircuitBreaker(self.breaker_failures, self.breaker_cooldown_seconds)
            )

    def _bulkhead(self, endpoint: Endpoint) -> threading.BoundedSemaphore:
        with self._lock:
            limit = endpoint.max_concurrency or self.max_concurrency
            return self._bulkheads.setdefault(endpoint.name, threading.BoundedSemaphore(max(1, limit)))

    def _response_cache(self) -> ResponseCache | None:
        with self._lock:
            if self._cache is None and self.cache_path:
                self._cache = ResponseCache(self.cache_path)
            return self._cache

    def _trace_store(self) -> TraceStore | None:
        with self._lock:
            if self._traces is None and self.trace_path:
                self._traces = TraceStore(self.trace_path, self.trace_redaction)
            return self._traces

    def trace_records(self, trace_ids: list[str]) -> list[dict[str, object]]:
        """The trace table rows of these calls (those the table still holds)."""
        store = self._trace_store()
        return store.get_many(trace_ids) if store else []

    def span_exporter(self):
        """The OpenTelemetry exporter, when an OTLP endpoint is configured."""
        with self._lock:
            if self._spans is None and self.otlp_endpoint:
                from resources.telemetry import SpanExporter

                self._spans = SpanExporter(self.otlp_endpoint)
            return self._spans

    def spent(self) -> dict[str, float]:
        with self._lock:
            return dict(self._spent)

    def _charge(self, record: CallRecord) -> None:
        with self._lock:
            self._spent["usd"] += record.cost_usd
            self._spent["tokens"] += record.prompt_tokens + record.completion_tokens

    def _check_budget(self) -> None:
        """Refuse a call once this run (this resource instance) has spent its budget."""
        with self._lock:
            over_usd = self.budget_usd and self._spent["usd"] >= self.budget_usd
            over_tokens = self.budget_tokens and self._spent["tokens"] >= self.budget_tokens
            if over_usd or over_tokens:
                raise BudgetExceededError(
                    f"model budget exhausted: spent {self._spent['tokens']:.0f} tokens and "
                    f"${self._spent['usd']:.4f} (budget: {self.budget_tokens or 'unlimited'} tokens, "
                    f"${self.budget_usd or 'unlimited'}); no further model calls in this run"
                )

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price_per_mtok + completion_tokens * self.output_price_per_mtok) / 1_000_000

    def _wait(self, retry_state) -> float:
        backoff = wait_exponential_jitter(initial=self.backoff_initial_seconds, max=self.backoff_max_seconds)
        hinted = retry_after_seconds(retry_state.outcome.exception() if retry_state.outcome else None)
        return min(hinted, self.backoff_max_seconds) if hinted is not None else backoff(retry_state)

    def _call_endpoint(self, endpoint: Endpoint, request: dict[str, Any]) -> tuple[Any, int]:
        """One endpoint, with retries; returns the response and how many attempts it took."""
        client = self._client(endpoint)
        attempts = 0
        for attempt in Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            reraise=True,
        ):
            with attempt:
                attempts += 1
                return client.chat.completions.create(model=endpoint.model_for(request["tier"]), **request["body"]), attempts
        raise AssertionError("unreachable")  # pragma: no cover

    def _complete(
        self, messages: Messages, schema: type[BaseModel], tier: Tier, max_tokens: int, ledger: CallLedger | None, reask: int
    ) -> tuple[str, CallRecord]:
        chain = self.chain()
        body = {
            "messages": messages,
            "response_format": response_format_for(schema),
            "max_tokens": max_tokens,
            "temperature": self.temperature,
        }
        key = request_key({"models": [e.model_for(tier) for e in chain], **body})
        cache = self._response_cache()
        cached = cache.get(key) if cache else None
        if cached is not None:
            record = CallRecord(tier=tier, model=cached.model, endpoint=cached.endpoint, cache_hit=True, reask=reask)
            self._record(ledger, record, messages, cached.content)
            return cached.content, record
        self._check_budget()
        failures: list[str] = []
        input_chars = sum(len(m["content"]) for m in messages)
        for position, endpoint in enumerate(chain):
            if endpoint.max_input_chars and input_chars > endpoint.max_input_chars:
                failures.append(f"{endpoint.name}: input of {input_chars} chars over its {endpoint.max_input_chars}")
                continue
            breaker = self._breaker(endpoint)
            if not breaker.allow():
                failures.append(f"{endpoint.name}: circuit open")
                continue
            record = CallRecord(
                tier=tier, model=endpoint.model_for(tier), endpoint=endpoint.name, fallback=position > 0, reask=reask
            )
            started = time.perf_counter()
            try:
                with self._bulkhead(endpoint):
                    response, record.attempt = self._call_endpoint(endpoint, {"tier": tier, "body": body})
            except openai.OpenAIError as exc:
                breaker.record_failure()
                record.latency_s = time.perf_counter() - started
                record.error = f"{type(exc).__name__}: {exc}"
                self._record(ledger, record, messages, "")
                failures.append(f"{endpoint.name} ({endpoint.model_for(tier)}): {record.error}")
                continue
            breaker.record_success()
            record.latency_s = time.perf_counter() - started
            if response.usage is not None:
                record.prompt_tokens = response.usage.prompt_tokens
                record.completion_tokens = response.usage.completion_tokens
            record.cost_usd = self._cost(record.prompt_tokens, record.completion_tokens)
            self._charge(record)
            content = (response.choices[0].message.content or "") if response.choices else ""
            self._record(ledger, record, messages, content)
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
            return content, record
        raise ModelCallError(f"all endpoints failed for tier {tier!r}: " + "; ".join(failures))

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
    ) -> tuple[T, str]:
        """A validated `schema` instance and the trace id of the call that produced it.

        An invalid answer is re-asked with its validation error, up to `max_reasks` times.
        """
        conversation = list(messages)
        last_error, last_answer = "", ""
        for reask in range(self.max_reasks + 1):
            last_answer, record = self._complete(conversation, schema, tier, max_tokens, ledger, reask)
            try:
                return schema.model_validate(json.loads(last_answer)), record.trace_id
            except (json.JSONDecodeError, ValidationError) as exc:
                last_error = _validation_message(exc)
                record.error = f"invalid output: {last_error}"
                traces = self._trace_store()
                if traces is not None:  # the row was written before the answer was judged
                    traces.add(record, conversation, last_answer, ledger.run_id if ledger else "", ledger.asset if ledger else "")
                conversation += [
                    {"role": "assistant", "content": last_answer},
                    {
                        "role": "user",
                        "content": f"That answer was invalid ({last_error}). "
                        "Answer again with JSON that matches the schema exactly.",
                    },
                ]
        raise StructuredOutputError(schema.__name__, self.max_reasks + 1, last_error, last_answer)

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
    ) -> list[tuple[T | Exception, str]]:
        """`map_structured` with each accepted answer's trace id ("" for failures).

        `on_done` is called as each request finishes (for progress). A spent budget is
        not a per-item failure: it propagates and stops the step.
        """

        def one(messages: Messages) -> tuple[T | Exception, str]:
            try:
                return self.traced_structured(messages, schema, tier=tier, max_tokens=max_tokens, ledger=ledger)
            except (StructuredOutputError, ModelCallError) as exc:
                return exc, ""
            finally:
                if on_done is not None:
                    on_done()

        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            return list(pool.map(one, requests))
