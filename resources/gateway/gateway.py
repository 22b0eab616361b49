"""The gateway at run time: the stages a request passes through, in order, and the state they keep.

One OpenAI-compatible code path serves OpenAI, vLLM, Ollama, llama.cpp and the embedded
local server, so what is tested against the local or a test server is what runs against a
hosted provider. A request meets, in turn: the response cache (and identical requests in
flight, which wait for the first), the session's memory of requests that stayed invalid,
the budget and the spend caps, the endpoint chain with a circuit breaker per endpoint, the bulkhead and
retries of each call, validation with a bounded re-ask, and the record of every call
(ledger, cost, trace row, span). Callers get a validated instance of the output model, or
an error that says what was wrong per endpoint; they never see raw model text, and only an
answer that validated is ever cached. Error text passes through `redact` before it is
stored or raised, since providers echo keys.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from resources.gateway.budget import RunBudget
from resources.gateway.call_recorder import CallRecorder
from resources.gateway.config import GatewayConfig
from resources.gateway.endpoint_calls import EndpointCalls
from resources.gateway.endpoint_chain import EndpointChain
from resources.gateway.endpoint_state import EndpointStates
from resources.gateway.errors import INVALID_OUTPUT, ModelCallError, StructuredOutputError
from resources.gateway.in_flight import InFlight
from resources.gateway.ledger import CallLedger, CallRecord
from resources.gateway.provider_batches import ProviderBatches
from resources.gateway.request import ModelRequest
from resources.gateway.response_cache import CachedResponse, ResponseCache
from resources.gateway.spend_limits import CapStanding, SpendLimits
from resources.gateway.validation import Answer, InvalidAnswers, Reasks
from resources.secrets import reveal


class Gateway:
    """What one model resource holds while it runs, built from its settings on first use."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._cache: ResponseCache | None = None
        self._in_flight = InFlight()
        self._states = EndpointStates(config)
        self._recorder = CallRecorder(config)
        self._budget = RunBudget(config, self._recorder.traces)
        self.limits = SpendLimits(config)
        reasks = Reasks(config, EndpointCalls(config, self._states), self._budget, self._recorder, self.limits)
        self._chain = EndpointChain(config, self._states, reasks, self._recorder)
        self.batches = ProviderBatches(
            config, self._states, self._recorder, self._response_cache, self._chain.models, self.limits
        )

    def complete(self, request: ModelRequest, ledger: CallLedger, invalid: InvalidAnswers) -> tuple[Any, CallRecord]:
        """The validated answer to `request` and the record of the call that produced it; every
        call is recorded in `ledger`. Raises `ModelCallError` (`StructuredOutputError` when some
        endpoint answered invalidly) with the reason per endpoint, `BudgetExceededError` once
        the run's budget is spent."""
        cache = self._response_cache()
        key = request.key(self._chain.models(request.tier))
        if cache is None:
            return self._complete_once(request, key, cache, ledger, invalid)
        return self._in_flight.once(key, lambda: self._complete_once(request, key, cache, ledger, invalid))

    def _complete_once(
        self,
        request: ModelRequest,
        key: str,
        cache: ResponseCache | None,
        ledger: CallLedger,
        invalid: InvalidAnswers,
    ) -> tuple[Any, CallRecord]:
        label = {"tier": request.tier, "request_id": uuid.uuid4().hex, "partition": request.partition}
        hit = cache.valid(key, request.output) if cache else None
        if hit is not None:
            value, cached = hit
            record = CallRecord(model=cached.model, endpoint=cached.endpoint, cache_hit=True, **label)
            self._recorder.record(ledger, record, request.messages, cached.content)
            return value, record
        deterministic = request.temperature == 0
        known = invalid.get(key) if deterministic else None
        if known is not None:
            skipped = CallRecord(
                model=known[-1].model,
                endpoint=known[-1].endpoint,
                attempt=0,
                error="invalid output: the same request stayed invalid earlier in this computation; not asked again",
                error_kind=INVALID_OUTPUT,
                **label,
            )
            self._recorder.record(ledger, skipped, request.messages, "")
            raise StructuredOutputError(request.tier, known, request.output.__name__)
        outcome = self._chain.answer(request, ledger, label)
        if isinstance(outcome, Answer):
            record = outcome.record
            if cache:
                cache.put(
                    key,
                    CachedResponse(
                        content=outcome.content,
                        model=record.model,
                        endpoint=record.endpoint,
                        prompt_tokens=record.prompt_tokens,
                        completion_tokens=record.completion_tokens,
                    ),
                )
            return outcome.value, record
        failures = outcome
        if any(f.kind == INVALID_OUTPUT for f in failures):
            if deterministic and all(f.kind == INVALID_OUTPUT for f in failures):
                invalid.remember(key, failures)
            raise StructuredOutputError(request.tier, failures, request.output.__name__)
        raise ModelCallError(request.tier, failures)

    def _response_cache(self) -> ResponseCache | None:
        with self._lock:
            if self._cache is None and self.config.cache_path:
                self._cache = ResponseCache(reveal(self.config.cache_path))
            return self._cache

    # --- what the gateway can tell about itself ---------------------------------------------------

    def breaker_states(self) -> dict[str, str]:
        return self._states.breaker_states()

    def endpoint_paces(self) -> dict[str, float]:
        return self._states.paces()

    def spent(self, run_id: str = "") -> dict[str, float]:
        return self._budget.spent(run_id)

    def spend_caps(self) -> list[CapStanding]:
        return self.limits.standing()

    def trace_records(self, trace_ids: list[str]) -> list[dict[str, object]]:
        return self._recorder.trace_records(trace_ids)

    def flush_telemetry(self) -> None:
        spans = self._recorder.spans()
        if spans is not None:
            spans.flush()
