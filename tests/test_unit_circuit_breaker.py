"""The circuit breaker's states on a clock the test moves: when it opens, how long it stays
open, the single probe of the half-open state and what the probe's outcome does. The gateway
tests (test_gateway.py) see the same breaker over HTTP, where the cooldown has to be slept."""

from __future__ import annotations

import threading

import pytest

from resources.gateway.circuit_breaker import CircuitBreaker

pytestmark = pytest.mark.unit


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def opened(clock: FakeClock, threshold: int = 3, cooldown: float = 30.0) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold, cooldown, clock=clock)
    for _ in range(threshold):
        breaker.record_failure()
    assert breaker.state == "open"
    return breaker


def test_a_new_breaker_is_closed_and_lets_every_call_through(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 30.0, clock=clock)
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(10))


def test_it_opens_at_the_threshold_of_consecutive_failures_only(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 30.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_success()  # the count is of consecutive failures: a success starts it again
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()


def test_an_open_circuit_refuses_calls_until_the_cooldown_has_passed(clock: FakeClock) -> None:
    breaker = opened(clock, cooldown=30.0)
    clock.advance(29.9)
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(0.1)  # exactly the cooldown
    assert breaker.state == "half_open"


def test_half_open_lets_one_probe_through_at_a_time(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(30)
    assert breaker.allow()
    assert not breaker.allow() and not breaker.allow()  # the probe is still out
    assert breaker.state == "half_open"


def test_a_successful_probe_closes_the_circuit(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()
    breaker.record_failure()  # the failure count started again: one failure does not reopen it
    assert breaker.state == "closed"


def test_a_failed_probe_opens_the_circuit_for_a_whole_new_cooldown(clock: FakeClock) -> None:
    breaker = opened(clock, threshold=5, cooldown=30.0)
    clock.advance(45)
    assert breaker.allow()
    breaker.record_failure()  # one failure suffices while probing, whatever the threshold
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(29)
    assert breaker.state == "open"  # counted from the probe's failure, not from the first opening
    clock.advance(1)
    assert breaker.state == "half_open" and breaker.allow()


def test_a_threshold_below_one_opens_on_the_first_failure(clock: FakeClock) -> None:
    breaker = CircuitBreaker(0, 10.0, clock=clock)
    assert breaker.failure_threshold == 1
    breaker.record_failure()
    assert breaker.state == "open"


def test_of_many_threads_asking_at_once_in_half_open_exactly_one_probes(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(30)
    start = threading.Barrier(16)
    allowed: list[bool] = []

    def ask() -> None:
        start.wait()
        allowed.append(breaker.allow())

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1 and len(allowed) == 16
