"""Progress of a long fan-out of model calls: n of N, rate and time left, in the run's log.

Whoever runs the job in this process (the `run` command in a terminal) can listen to every
fan-out's progress, to draw a progress bar.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from pydantic import BaseModel


class Progress(BaseModel):
    label: str
    done: int
    total: int
    rate: float  # items per second so far
    remaining_s: float


_listeners: list[Callable[[Progress], None]] = []


def add_listener(listener: Callable[[Progress], None]) -> None:
    _listeners.append(listener)


def remove_listener(listener: Callable[[Progress], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


class ProgressLog:
    """Called once per finished item; logs about every tenth of the way (and at the end),
    so a long fan-out shows n of N, rate and time left without a line per item."""

    def __init__(self, log: Any, label: str, total: int):
        self._log, self._label, self._total = log, label, total
        self._done = 0
        self._started = time.monotonic()
        self._step = max(1, total // 10)
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self._done += 1
            done = self._done
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        progress = Progress(
            label=self._label,
            done=done,
            total=self._total,
            rate=rate,
            remaining_s=(self._total - done) / rate if rate else 0.0,
        )
        for listener in list(_listeners):
            listener(progress)
        if done % self._step and done != self._total:
            return
        self._log.info(f"{self._label}: {done} of {self._total} ({rate:.1f}/s, about {progress.remaining_s:.0f}s left)")
