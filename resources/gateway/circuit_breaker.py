"""A circuit breaker per endpoint: stop sending traffic to an endpoint that keeps failing.

After `failure_threshold` consecutive failures the circuit opens and calls skip the
endpoint (the next one in the fallback chain takes them) until `cooldown_seconds`
have passed; then one probe call is let through, and its outcome closes the circuit
or opens it for another cooldown.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, failure_threshold: int, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`clock` is any monotonic source of seconds, so that the cooldown can be stepped
        through by a test instead of waited out."""
        self.failure_threshold = max(1, failure_threshold)
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_seconds:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go to the endpoint now (in half-open state, one probe at a time)."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._probing = 0, None, False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probing = False
