"""The model resource: every chat call of the pipeline goes through here.

One OpenAI-compatible code path serves OpenAI, vLLM, Ollama, llama.cpp and the
embedded local server, so what is tested against the local or a test server is what
runs against a hosted provider. Callers ask for a pydantic model and get a validated
instance back, or a `StructuredOutputError` that says what was wrong; they never see
raw model text.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Sequence, TypeVar

from dagster import ConfigurableResource
from openai import OpenAI, OpenAIError
from pydantic import BaseModel, PrivateAttr, ValidationError

from resources.ledger import CallLedger, CallRecord
from resources.local_model import EMBEDDED_SERVER, LOCAL_MODEL_NAME, LocalServerSettings

Tier = Literal["fast", "strong"]
T = TypeVar("T", bound=BaseModel)
Messages = list[dict[str, str]]


class ModelCallError(RuntimeError):
    """The endpoint could not be reached or refused the request."""


class StructuredOutputError(RuntimeError):
    """The model's answers stayed invalid for the schema after every re-ask."""

    def __init__(self, schema: str, attempts: int, last_error: str, last_answer: str):
        self.schema = schema
        self.attempts = attempts
        self.last_error = last_error
        self.last_answer = last_answer
        super().__init__(
            f"{schema}: no valid answer after {attempts} attempt(s); last error: {last_error}"
        )


def response_format_for(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `json_schema` response format; llama.cpp turns it into a grammar."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": schema.__name__,
            "schema": schema.model_json_schema(),
            "strict": False,
        },
    }


def _validation_message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
            for e in error.errors()[:5]
        ]
        return "; ".join(parts)
    return str(error)


class ModelResource(ConfigurableResource):
    """An OpenAI-compatible chat endpoint with a model per task tier.

    Leave `base_url` empty to use the embedded local model (started on first use).
    """

    base_url: str = ""
    api_key: str = ""
    fast_model: str = ""
    strong_model: str = ""
    timeout_seconds: float = 60.0
    max_reasks: int = 2
    max_concurrency: int = 4
    temperature: float = 0.0
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0

    _client: OpenAI | None = PrivateAttr(default=None)
    _endpoint: str = PrivateAttr(default="")

    @property
    def uses_embedded_model(self) -> bool:
        return not self.base_url

    def endpoint(self) -> str:
        self._ensure_client()
        return self._endpoint

    def model_for(self, tier: Tier) -> str:
        name = self.fast_model if tier == "fast" else self.strong_model
        return name or self.fast_model or self.strong_model or LOCAL_MODEL_NAME

    def _ensure_client(self) -> OpenAI:
        if self._client is None:
            if self.base_url:
                endpoint = self.base_url.rstrip("/")
            else:
                endpoint = EMBEDDED_SERVER.base_url(
                    LocalServerSettings(parallel_slots=max(1, self.max_concurrency))
                )
            self._endpoint = endpoint
            self._client = OpenAI(
                base_url=endpoint,
                api_key=self.api_key or "not-needed",
                timeout=self.timeout_seconds,
                max_retries=2,
            )
        return self._client

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_price_per_mtok
            + completion_tokens * self.output_price_per_mtok
        ) / 1_000_000

    def _complete(self, messages: Messages, schema: type[BaseModel], tier: Tier, max_tokens: int):
        client = self._ensure_client()
        try:
            return client.chat.completions.create(
                model=self.model_for(tier),
                messages=messages,  # type: ignore[arg-type]
                response_format=response_format_for(schema),  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=self.temperature,
            )
        except OpenAIError as exc:
            raise ModelCallError(
                f"{self._endpoint} ({self.model_for(tier)}): {type(exc).__name__}: {exc}"
            ) from exc

    def structured(
        self,
        messages: Messages,
        schema: type[T],
        *,
        tier: Tier = "fast",
        max_tokens: int = 256,
        ledger: CallLedger | None = None,
    ) -> T:
        """Ask for a `schema` instance; re-ask with the validation error up to `max_reasks` times."""
        conversation = list(messages)
        attempts = 0
        last_error, last_answer = "", ""
        while attempts <= self.max_reasks:
            attempts += 1
            started = time.perf_counter()
            record = CallRecord(tier=tier, model=self.model_for(tier), endpoint="", attempt=attempts)
            try:
                response = self._complete(conversation, schema, tier, max_tokens)
            except ModelCallError as exc:
                record.endpoint = self._endpoint
                record.latency_s = time.perf_counter() - started
                record.error = str(exc)
                if ledger is not None:
                    ledger.add(record)
                raise
            record.endpoint = self._endpoint
            record.latency_s = time.perf_counter() - started
            if response.usage is not None:
                record.prompt_tokens = response.usage.prompt_tokens
                record.completion_tokens = response.usage.completion_tokens
            record.cost_usd = self._cost(record.prompt_tokens, record.completion_tokens)
            last_answer = (response.choices[0].message.content or "") if response.choices else ""
            try:
                value = schema.model_validate(json.loads(last_answer))
            except (json.JSONDecodeError, ValidationError) as exc:
                last_error = _validation_message(exc)
                record.error = f"invalid output: {last_error}"
                if ledger is not None:
                    ledger.add(record)
                conversation += [
                    {"role": "assistant", "content": last_answer},
                    {
                        "role": "user",
                        "content": f"That answer was invalid ({last_error}). "
                        "Answer again with JSON that matches the schema exactly.",
                    },
                ]
                continue
            if ledger is not None:
                ledger.add(record)
            return value
        raise StructuredOutputError(schema.__name__, attempts, last_error, last_answer)

    def map_structured(
        self,
        requests: Sequence[Messages],
        schema: type[T],
        *,
        tier: Tier = "fast",
        max_tokens: int = 256,
        ledger: CallLedger | None = None,
    ) -> list[T | Exception]:
        """Run many requests at bounded concurrency; one failure never loses the others."""

        def one(messages: Messages) -> T | Exception:
            try:
                return self.structured(
                    messages, schema, tier=tier, max_tokens=max_tokens, ledger=ledger
                )
            except (StructuredOutputError, ModelCallError) as exc:
                return exc

        self._ensure_client()
        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            return list(pool.map(one, requests))
