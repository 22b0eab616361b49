"""The fallback chain: each endpoint in turn, until one gives a valid answer.

An endpoint is skipped when the prompt is longer than it takes (a long-context endpoint
later in the chain takes it) or when its circuit is open. What an endpoint's failure does
to its breaker depends on whether anything comes after it: an endpoint that answers, however
badly, is not down, so its invalid answers and refused requests (4xx) count against its
breaker only when a later endpoint can take its requests; a lone small model is never shut
off for a run of bad answers or one prompt too long for its context. Only silence (refused
connections, 5xx, timeouts) opens the last endpoint's circuit.

Two refusals are typed (see `refusals`), since the next endpoint in line may refuse them just
the same: a prompt over the context window goes on only to later endpoints with a larger
declared window, and, when none is left and the request allows it, is cut to fit the largest
window and asked again there; a content-policy refusal goes straight to the endpoint configured
for it, or fails the request. Neither counts against the refusing endpoint's breaker: it is up.
Each endpoint asked for such a reason carries it in its records (`fallback_reason`).
"""

from __future__ import annotations

from typing import Any

from resources.gateway.call_recorder import CallRecorder
from resources.gateway.config import GatewayConfig, Tier
from resources.gateway.context_cut import cut_to_fit
from resources.gateway.endpoint_state import EndpointStates
from resources.gateway.errors import EndpointFailure
from resources.gateway.ledger import CallLedger, CallRecord
from resources.gateway.refusals import CONTENT_POLICY, CONTEXT_WINDOW
from resources.gateway.request import ModelRequest
from resources.gateway.validation import Answer, Reasks

CUT_TO_FIT = "cut to fit context window"


class EndpointChain:
    def __init__(self, config: GatewayConfig, states: EndpointStates, reasks: Reasks, recorder: CallRecorder):
        self.endpoints = config.chain()  # built once: config objects are not free
        self._states = states
        self._reasks = reasks
        self._recorder = recorder
        names = [e.name for e in self.endpoints]
        policy = config.content_policy_endpoint
        if policy and policy not in names:
            raise ValueError(
                f"content_policy_endpoint {policy!r} is none of the chain's endpoints ({', '.join(names)})"
            )
        self._content_policy = names.index(policy) if policy else None

    def models(self, tier: Tier) -> list[str]:
        """The model each endpoint would answer `tier` with, in the order they are tried."""
        return [e.model_for(tier) for e in self.endpoints]

    def answer(
        self, request: ModelRequest, ledger: CallLedger, label: dict[str, Any]
    ) -> Answer | list[EndpointFailure]:
        """The first valid answer along the chain, or why each endpoint gave none."""
        failures: list[EndpointFailure] = []
        waiting = list(range(len(self.endpoints)))  # positions still to ask, in order
        asked: set[int] = set()
        stated: dict[int, int] = {}  # position -> the context window its refusal named
        reason = ""  # why the endpoints now waiting are asked, after a typed refusal
        cut = False  # a request is cut once: a cut prompt still refused fails
        last = len(self.endpoints) - 1
        while waiting:
            position = waiting.pop(0)
            endpoint = self.endpoints[position]
            model_name = endpoint.model_for(request.tier)
            input_chars = request.input_chars  # a cut request is shorter
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
            asked.add(position)
            outcome = self._reasks.ask(
                endpoint, request, ledger, {**label, "fallback": position > 0, "fallback_reason": reason}
            )
            if isinstance(outcome, Answer):
                breaker.record_success()
                return outcome
            failures.append(outcome)
            if outcome.kind == CONTEXT_WINDOW:
                breaker.record_success()  # it answered: the prompt is too long, not the endpoint down
                stated[position] = outcome.window_tokens
                waiting = self._larger_windows(position, stated, waiting, request, ledger, label, failures)
                reason = CONTEXT_WINDOW
                if not waiting and request.context_overflow == "cut" and not cut:
                    fitted = self._cut(request, stated)
                    if fitted is not None:
                        target, request = fitted
                        waiting, reason, cut = [target], CUT_TO_FIT, True
                continue
            if outcome.kind == CONTENT_POLICY:
                breaker.record_success()  # it answered: the refusal is of the content
                target = self._content_policy
                waiting = [target] if target is not None and target not in asked else []
                reason = CONTENT_POLICY
                continue
            if outcome.outage or position < last:
                breaker.record_failure()
            else:  # it answered, so it is up; this also settles a half-open probe
                breaker.record_success()
        return failures

    def _window(self, position: int, stated: dict[int, int]) -> int:
        """An endpoint's context window: as its refusal named it, else as declared (0: unknown)."""
        return stated.get(position) or self.endpoints[position].context_window_tokens

    def _larger_windows(
        self,
        refused_at: int,
        stated: dict[int, int],
        waiting: list[int],
        request: ModelRequest,
        ledger: CallLedger,
        label: dict[str, Any],
        failures: list[EndpointFailure],
    ) -> list[int]:
        """The waiting endpoints whose declared window is larger than the one that refused the
        prompt; the others are skipped, each with a record that says why."""
        refused = self._window(refused_at, stated)
        larger = [p for p in waiting if self.endpoints[p].context_window_tokens > refused]
        for position in waiting:
            if position in larger:
                continue
            endpoint = self.endpoints[position]
            window = endpoint.context_window_tokens
            refuser = self.endpoints[refused_at].name
            why = (
                f"skipped: its context window of {window} tokens is not larger than {refuser}'s {refused}, "
                "which refused the prompt as too long"
                if window
                else f"skipped: its context window is not declared, so it is not known to take more than {refuser}, "
                "which refused the prompt as too long"
            )
            model_name = endpoint.model_for(request.tier)
            skipped = CallRecord(
                model=model_name,
                endpoint=endpoint.name,
                fallback=position > 0,
                attempt=0,
                error=why,
                error_kind=CONTEXT_WINDOW,
                **label,
            )
            self._recorder.record(ledger, skipped, request.messages, "")
            failures.append(EndpointFailure(endpoint=endpoint.name, model=model_name, kind=CONTEXT_WINDOW, detail=why))
        return larger

    def _cut(self, request: ModelRequest, stated: dict[int, int]) -> tuple[int, ModelRequest] | None:
        """The endpoint with the largest known window and the request cut to fit it; None when no
        window is known (nothing to cut to) or the prompt cannot be cut to fit."""
        windows = {p: self._window(p, stated) for p in range(len(self.endpoints))}
        target = max(windows, key=lambda p: (windows[p], -p))
        if not windows[target]:
            return None
        messages = cut_to_fit(request.messages, windows[target], request.max_tokens)
        if messages is None:
            return None
        return target, request.model_copy(update={"messages": messages})
