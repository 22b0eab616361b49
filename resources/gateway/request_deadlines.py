"""Deadlines from the work: how long a request to an endpoint may take, from its token budget
and the pace the endpoint has shown.

A fixed timeout turns a slow model into an outage: llama.cpp on a laptop that is doing other
work answers 4 to 10 times slower than on an idle machine, and a 60-second limit that suits a
hosted provider cuts off every long draft. An endpoint whose timeout is left at 0 is given
instead, per request, a deadline of `DEADLINE_MARGIN` times the time its budget (the prompt
and `max_tokens`) would take at the endpoint's measured pace, never under a floor. The pace is
learnt from the calls it completed, so a loaded machine lengthens its own deadlines; until
the first answer it is a configured, deliberately low, starting value.

A deadline that still passes means the endpoint did not come near its own measured pace,
which is a hung server rather than a slow one; each retry doubles the deadline, so a server
that slowed down after its pace was measured is still waited for.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque

# Prompt tokens are read in batches, many times faster than answer tokens are generated
# (llama.cpp on a CPU: about 8 to 20 times); a prompt token is counted as this share of
# an answer token, in the budget and in the measured pace alike, so the two stay comparable.
PROMPT_TOKEN_WEIGHT = 0.125
# Prompts are measured before they are tokenized: at most this many characters make a token
# (English text runs 4 or more; fewer here means a longer, safer deadline).
CHARS_PER_TOKEN = 3.0
# How many times its measured budget time a request may take before it counts as a timeout.
DEADLINE_MARGIN = 3.0
# The pace is the median of the last calls, so one stalled or one instant answer does not set it.
PACE_WINDOW = 16


def request_work(prompt_tokens: float, answer_tokens: float) -> float:
    """The work of a request in answer-token equivalents."""
    return prompt_tokens * PROMPT_TOKEN_WEIGHT + answer_tokens


def prompt_tokens_estimate(prompt_chars: int) -> float:
    return prompt_chars / CHARS_PER_TOKEN


class EndpointPace:
    """The measured pace of one endpoint (answer-token equivalents per second of a request),
    and the deadlines that follow from it."""

    def __init__(self, start_tokens_per_s: float, floor_seconds: float) -> None:
        self.start_tokens_per_s = start_tokens_per_s
        self.floor_seconds = floor_seconds
        self._recent: deque[float] = deque(maxlen=PACE_WINDOW)
        self._lock = threading.Lock()

    @property
    def tokens_per_s(self) -> float:
        with self._lock:
            return statistics.median(self._recent) if self._recent else self.start_tokens_per_s

    @property
    def measured_calls(self) -> int:
        with self._lock:
            return len(self._recent)

    def record(self, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
        """One completed call; calls without token counts or time tell nothing and are ignored."""
        work = request_work(prompt_tokens, completion_tokens)
        if work <= 0 or seconds <= 0:
            return
        with self._lock:
            self._recent.append(work / seconds)

    def deadline(self, prompt_chars: int, max_tokens: int, attempt: int = 1) -> float:
        """Seconds that try number `attempt` (from 1) of a request may take."""
        budget = request_work(prompt_tokens_estimate(prompt_chars), max_tokens)
        seconds = max(self.floor_seconds, DEADLINE_MARGIN * budget / self.tokens_per_s)
        return seconds * 2 ** max(0, attempt - 1)
