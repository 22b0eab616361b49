"""Validation and the bounded re-ask: an answer is only ever handed on once it validates.

Validation belongs to the endpoint that answered: an invalid answer is asked again there,
with what was wrong, up to `max_reasks` times; an endpoint whose answers stay invalid has
failed this request, and the chain moves on. At temperature 0 the same conversation gets
the same answer, so a request that stayed invalid on every endpoint is not asked again in
the same session: it fails at once, with the first time's reasons.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, NamedTuple

import openai
from pydantic import BaseModel, ValidationError

from resources.gateway.budget import RunBudget
from resources.gateway.call_recorder import CallRecorder
from resources.gateway.config import Endpoint, GatewayConfig
from resources.gateway.endpoint_calls import EndpointCalls, error_kind
from resources.gateway.errors import INVALID_OUTPUT, EndpointFailure
from resources.gateway.ledger import CallLedger, CallRecord
from resources.gateway.refusals import CONTENT_POLICY, answer_refusal, stated_window
from resources.gateway.request import ModelRequest
from resources.gateway.spend_limits import SpendLimits
from resources.secrets import redact


class Answer(NamedTuple):
    """A validated answer, the record of the call that gave it, and its text (what is cached)."""

    value: Any
    record: CallRecord
    content: str


def reasks_for(schema: type[BaseModel], default: int) -> int:
    """Times an invalid answer for `schema` is asked again: the gateway's `max_reasks`, or fewer when
    the schema declares `max_reasks: ClassVar[int]` (an answer a grammar already holds to its schema
    that is still invalid tends to come back the same, so asking again spends calls on nothing)."""
    declared = getattr(schema, "max_reasks", None)
    return min(default, declared) if isinstance(declared, int) else default


def validation_message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in error.errors()[:5])
    return str(error)


class InvalidAnswers:
    """The requests of one session that stayed invalid on every endpoint, by cache key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, list[EndpointFailure]] = {}

    def get(self, key: str) -> list[EndpointFailure] | None:
        with self._lock:
            return self._known.get(key)

    def remember(self, key: str, failures: list[EndpointFailure]) -> None:
        with self._lock:
            self._known[key] = failures


class Reasks:
    """One endpoint's answer to one request: validated, re-asked while invalid, every call recorded."""

    def __init__(
        self,
        config: GatewayConfig,
        calls: EndpointCalls,
        budget: RunBudget,
        recorder: CallRecorder,
        limits: SpendLimits | None = None,
    ):
        self._config = config
        self._calls = calls
        self._budget = budget
        self._limits = limits or SpendLimits(config)
        self._recorder = recorder

    def ask(
        self, endpoint: Endpoint, request: ModelRequest, ledger: CallLedger, label: dict[str, Any]
    ) -> Answer | EndpointFailure:
        """A validated answer, or why the endpoint gave none (its calls are recorded either way)."""
        conversation = list(request.messages)
        parameters = request.parameters()
        secrets = self._config.secrets()
        sent = 0
        reasks = reasks_for(request.output, self._config.max_reasks)
        for reask in range(reasks + 1):
            self._budget.check(ledger.run_id)
            held = self._limits.reserve(endpoint, label["tier"], conversation, request.max_tokens, ledger.run_id)
            record = CallRecord(model=endpoint.model_for(label["tier"]), endpoint=endpoint.name, reask=reask, **label)
            started = time.perf_counter()
            try:
                response = self._calls.send(endpoint, {"messages": conversation, **parameters}, record)
            except BaseException as exc:
                self._limits.release(held)  # no answer, nothing to pay
                if not isinstance(exc, openai.OpenAIError):
                    raise
                sent += record.attempt
                record.latency_s = time.perf_counter() - started
                record.error_kind = error_kind(exc)
                record.error = redact(f"{type(exc).__name__}: {exc}", secrets)
                self._recorder.record(ledger, record, conversation, "")
                return EndpointFailure(
                    endpoint=endpoint.name,
                    model=record.model,
                    kind=record.error_kind,
                    detail=record.error,
                    attempts=sent,
                    window_tokens=stated_window(exc),
                )
            sent += record.attempt
            record.latency_s = time.perf_counter() - started
            if response.usage is not None:
                record.prompt_tokens = response.usage.prompt_tokens
                record.completion_tokens = response.usage.completion_tokens
            record.cost_usd = self._config.cost(record.tier, record.prompt_tokens, record.completion_tokens)
            self._budget.charge(record)
            self._limits.settle(held, record)
            refused = answer_refusal(response)
            if refused:  # asking the same endpoint again gets the same refusal
                record.error_kind = CONTENT_POLICY
                record.error = redact(f"content policy: {refused}", secrets)
                self._recorder.record(ledger, record, conversation, "")
                return EndpointFailure(
                    endpoint=endpoint.name, model=record.model, kind=CONTENT_POLICY, detail=record.error, attempts=sent
                )
            content = request.answer_text(response)
            try:
                value = request.output.model_validate(json.loads(content))
            except (json.JSONDecodeError, ValidationError) as exc:
                problem = redact(validation_message(exc), secrets)
                last = reask == reasks
                record.error_kind = INVALID_OUTPUT
                record.error = (
                    f"invalid output after {reask + 1} attempts: {problem}" if last else f"invalid output: {problem}"
                )
                self._recorder.record(ledger, record, conversation, content)
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
            self._recorder.record(ledger, record, conversation, content)
            return Answer(value, record, content)
        raise AssertionError("unreachable")  # pragma: no cover
