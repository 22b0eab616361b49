"""Deadlines from the work and llama.cpp's thread count, as pure functions. Over HTTP, with a
slow and a dead endpoint, see test_slow_model.py."""

from __future__ import annotations

import pytest

from resources.gateway.local_model import LocalServerSettings, free_cores
from resources.gateway.request_deadlines import DEADLINE_MARGIN, EndpointPace, request_work

pytestmark = pytest.mark.unit


def test_a_bigger_budget_gets_a_longer_deadline_and_the_floor_holds_for_small_ones():
    pace = EndpointPace(start_tokens_per_s=10.0, floor_seconds=5.0)
    short, long = pace.deadline(prompt_chars=30, max_tokens=8), pace.deadline(prompt_chars=300, max_tokens=800)
    assert short == 5.0  # its budget alone would allow under 3 s
    assert long == pytest.approx(DEADLINE_MARGIN * request_work(100, 800) / 10.0)  # 300 chars: at most 100 tokens
    assert long > 200 > short


def test_the_pace_is_measured_from_answers_and_a_slower_endpoint_gets_longer_deadlines():
    pace = EndpointPace(start_tokens_per_s=100.0, floor_seconds=1.0)
    before = pace.deadline(prompt_chars=3000, max_tokens=400)
    for _ in range(5):  # a loaded machine: 1000 prompt and 100 answer tokens take 45 s
        pace.record(prompt_tokens=1000, completion_tokens=100, seconds=45.0)
    assert pace.measured_calls == 5
    assert pace.tokens_per_s == pytest.approx(request_work(1000, 100) / 45.0)
    after = pace.deadline(prompt_chars=3000, max_tokens=400)
    assert after > 10 * before
    # The answer it is waited for: the same work at the measured pace fits well inside the deadline.
    assert request_work(1000, 400) / pace.tokens_per_s < after


def test_one_stalled_answer_does_not_set_the_pace_and_empty_calls_are_ignored():
    pace = EndpointPace(start_tokens_per_s=4.0, floor_seconds=1.0)
    for seconds in (2.0, 2.0, 2.0, 2.0, 600.0):
        pace.record(prompt_tokens=80, completion_tokens=40, seconds=seconds)
    pace.record(prompt_tokens=0, completion_tokens=0, seconds=1.0)
    pace.record(prompt_tokens=10, completion_tokens=10, seconds=0.0)
    assert pace.measured_calls == 5
    assert pace.tokens_per_s == pytest.approx(request_work(80, 40) / 2.0)


def test_each_retry_doubles_the_deadline():
    pace = EndpointPace(start_tokens_per_s=4.0, floor_seconds=2.0)
    first = pace.deadline(prompt_chars=0, max_tokens=0, attempt=1)
    assert first == 2.0
    assert [pace.deadline(0, 0, attempt=n) for n in (2, 3, 4)] == [4.0, 8.0, 16.0]


@pytest.mark.parametrize(
    ("cores", "load", "threads"),
    [
        (2, 0.0, 1),  # the pipeline's own work takes the other core
        (2, 1.2, 1),  # one core busy elsewhere: never 2 threads
        (2, 3.0, 1),  # overloaded: still one
        (8, 0.0, 7),
        (8, 3.4, 4),
        (1, 0.0, 1),
    ],
)
def test_threads_are_the_free_cores_less_one_and_at_least_one(cores, load, threads):
    assert free_cores(cores, load) == threads


def test_an_explicit_thread_count_is_kept():
    assert LocalServerSettings(parallel_slots=4, context_per_slot=2048, threads=3, verbosity=-1).cpu_threads == 3
    measured = LocalServerSettings(parallel_slots=4, context_per_slot=2048, threads=0, verbosity=-1).cpu_threads
    assert measured == free_cores()
