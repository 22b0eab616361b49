"""One call to one endpoint: inside its bulkhead, with retries that honour Retry-After, under
a deadline.

Retries are tenacity's, and the openai client's own are off, so the two never multiply. An
endpoint with a timeout keeps it; one without gets a deadline per try from the request's
budget and its measured pace (see `request_deadlines`), and each answer it gives refines
that pace.
"""

from __future__ import annotations

import time
from typing import Any

import openai
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from resources.gateway.config import Endpoint, GatewayConfig
from resources.gateway.endpoint_state import EndpointStates
from resources.gateway.ledger import RETRYABLE_STATUS, CallRecord
from resources.gateway.refusals import refusal_kind


def error_kind(error: BaseException) -> str:
    """How a call failed, in the words a run report uses: the status code, the transport failure,
    or the refusal of what was asked (see `refusals`)."""
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection error"
    if isinstance(error, openai.APIStatusError):
        return refusal_kind(error) or str(error.status_code)
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


class EndpointCalls:
    def __init__(self, config: GatewayConfig, endpoints: EndpointStates) -> None:
        self._config = config
        self._endpoints = endpoints

    def send(self, endpoint: Endpoint, body: dict[str, Any], record: CallRecord) -> Any:
        """The endpoint's response to `body`; `record.attempt` counts the tries, failed or not.
        Raises the last `openai.OpenAIError` when every try failed."""
        with self._endpoints.bulkhead(endpoint):
            return self._with_retries(endpoint, body, record)

    def _wait(self, retry_state) -> float:
        backoff = wait_exponential_jitter(
            initial=self._config.backoff_initial_seconds, max=self._config.backoff_max_seconds
        )
        hinted = retry_after_seconds(retry_state.outcome.exception() if retry_state.outcome else None)
        return min(hinted, self._config.backoff_max_seconds) if hinted is not None else backoff(retry_state)

    def _with_retries(self, endpoint: Endpoint, body: dict[str, Any], record: CallRecord) -> Any:
        client = self._endpoints.client(endpoint)
        pace = None if endpoint.timeout_seconds else self._endpoints.pace(endpoint)
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body["messages"])
        record.attempt = 0
        for attempt in Retrying(
            stop=stop_after_attempt(self._config.max_retries + 1),
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
