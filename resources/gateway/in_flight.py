"""Identical requests in flight at once are sent once.

Two drafts that hold the same sentence ask the same revision at the same moment: the later
ones wait for the first and then take its answer from the response cache, as they would had
they come a moment later. Only with a cache, since without one there is nowhere to take the
answer from; after a failed first, each waiting request tries for itself.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

R = TypeVar("R")


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    def once(self, key: str, work: Callable[[], R]) -> R:
        """`work()`, after any identical request (same `key`) already in flight has finished."""
        with self._lock:
            running = self._running.get(key)
            if running is None:
                self._running[key] = threading.Event()
        if running is not None:
            running.wait()
            return work()
        try:
            return work()
        finally:
            with self._lock:
                self._running.pop(key).set()
