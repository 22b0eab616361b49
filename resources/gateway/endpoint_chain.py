"""The fallback chain: each endpoint in turn, until one gives a valid answer.

An endpoint is skipped when the prompt is longer than it takes (a long-context endpoint
later in the chain takes it) or when its circuit is open. What an endpoint's failure does
to its breaker depends on whether anything comes after it: an endpoint that answers, however
badly, is not down, so its invalid answers and refused requests (4xx) count against its
breaker only when a later endpoint can take its requests; a lone small model is never shut
off for a run of bad answers or one prompt too long for its context. Only silence (refused
connections, 5xx, timeouts) opens the last endpoint's circuit.
"""

from __future__ import annotations

from typing import Any

from resources.gateway.call_recorder import CallRecorder
from resources.gateway.config import GatewayConfig, Tier
from resources.gateway.endpoint_state import EndpointStates
from resources.gateway.errors import EndpointFailure
from resources.gateway.ledger import CallLedger, CallRecord
from resources.gateway.request import ModelRequest
from resources.gateway.validation import Answer, Reasks


class EndpointChain:
    def __init__(self, config: GatewayConfig, states: EndpointStates, reasks: Reasks, recorder: CallRecorder):
        self.endpoints = config.chain()  # built once: config objects are not free
        self._states = states
        self._reasks = reasks
        self._recorder = recorder

    def models(self, tier: Tier) -> list[str]:
        """The model each endpoint would answer `tier` with, in the order they are tried."""
        return [e.model_for(tier) for e in self.endpoints]

    def answer(
        self, request: ModelRequest, ledger: CallLedger, label: dict[str, Any]
    ) -> Answer | list[EndpointFailure]:
        """The first valid answer along the chain, or why each endpoint gave none."""
        failures: list[EndpointFailure] = []
        input_chars = request.input_chars
        last = len(self.endpoints) - 1
        for position, endpoint in enumerate(self.endpoints):
            model_name = endpoint.model_for(request.tier)
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
            breaker = self._states.breaker(endpoint)
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
                self._recorder.record(ledger, skipped, request.messages, "")
                failures.append(
                    EndpointFailure(
                        endpoint=endpoint.name, model=model_name, kind="circuit open", detail="circuit open"
                    )
                )
                continue
            outcome = self._reasks.ask(endpoint, request, ledger, {**label, "fallback": position > 0})
            if isinstance(outcome, EndpointFailure):
                if outcome.outage or position < last:
                    breaker.record_failure()
                else:  # it answered, so it is up; this also settles a half-open probe
                    breaker.record_success()
                failures.append(outcome)
                continue
            breaker.record_success()
            return outcome
        return failures
