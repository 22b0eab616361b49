"""What the gateway holds per endpoint while it runs: a client, a circuit breaker, a bulkhead
and a measured pace, each made on the endpoint's first request and kept for the resource's life.

An endpoint with an empty base URL is the embedded local model, whose server starts here, on
the first request that needs it, never when the resource is built.
"""

from __future__ import annotations

import threading

from openai import OpenAI

from resources.gateway.circuit_breaker import CircuitBreaker
from resources.gateway.config import Endpoint, GatewayConfig
from resources.gateway.local_model import EMBEDDED_SERVER
from resources.gateway.request_deadlines import EndpointPace
from resources.secrets import reveal


class EndpointStates:
    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._clients: dict[str, OpenAI] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._bulkheads: dict[str, threading.BoundedSemaphore] = {}
        self._paces: dict[str, EndpointPace] = {}

    def url(self, endpoint: Endpoint) -> str:
        if endpoint.base_url:
            return endpoint.base_url.rstrip("/")
        return EMBEDDED_SERVER.base_url(self._config.local_server())

    def client(self, endpoint: Endpoint) -> OpenAI:
        with self._lock:
            if endpoint.name not in self._clients:
                self._clients[endpoint.name] = OpenAI(
                    base_url=self.url(endpoint),
                    api_key=reveal(endpoint.api_key) or "not-needed",
                    timeout=endpoint.timeout_seconds or self._config.deadline_floor_seconds,  # each call sets its own
                    max_retries=0,  # tenacity retries; the client's own would multiply them
                )
            return self._clients[endpoint.name]

    def breaker(self, endpoint: Endpoint) -> CircuitBreaker:
        with self._lock:
            return self._breakers.setdefault(
                endpoint.name,
                CircuitBreaker(self._config.breaker_failures, self._config.breaker_cooldown_seconds),
            )

    def bulkhead(self, endpoint: Endpoint) -> threading.BoundedSemaphore:
        with self._lock:
            limit = endpoint.max_concurrency or self._config.max_concurrency
            return self._bulkheads.setdefault(endpoint.name, threading.BoundedSemaphore(max(1, limit)))

    def pace(self, endpoint: Endpoint) -> EndpointPace:
        with self._lock:
            return self._paces.setdefault(
                endpoint.name, EndpointPace(self._config.start_tokens_per_s, self._config.deadline_floor_seconds)
            )

    def breaker_states(self) -> dict[str, str]:
        with self._lock:
            return {name: breaker.state for name, breaker in self._breakers.items()}

    def paces(self) -> dict[str, float]:
        """The measured tokens/s of each endpoint that takes its deadlines from the work."""
        with self._lock:
            return {name: round(pace.tokens_per_s, 2) for name, pace in self._paces.items()}
