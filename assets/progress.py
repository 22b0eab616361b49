"""Progress of a long fan-out, in the run's logs: n of N, rate and time left."""

import threading
import time


class ProgressLog:
    """Called once per finished item; logs about every tenth of the way (and at the end)."""

    def __init__(self, log, label: str, total: int):
        self._log, self._label, self._total = log, label, total
        self._done = 0
        self._started = time.monotonic()
        self._step = max(1, total // 10)
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self._done += 1
            done = self._done
        if done % self._step and done != self._total:
            return
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        remaining = (self._total - done) / rate if rate else 0.0
        self._log.info(f"{self._label}: {done} of {self._total} ({rate:.1f}/s, about {remaining:.0f}s left)")
