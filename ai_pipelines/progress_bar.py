"""The `run` command's progress bar: one line redrawn in place while a fan-out runs,
drawn only when the output is a terminal (logs and CI output stay clean)."""

from __future__ import annotations

import threading
from typing import TextIO

from resources.gateway.progress import Progress

WIDTH = 30


def render(progress: Progress) -> str:
    filled = int(WIDTH * progress.done / max(1, progress.total))
    return (
        f"{progress.label:<12} [{'#' * filled}{'-' * (WIDTH - filled)}] {progress.done}/{progress.total} "
        f"{progress.rate:.1f}/s, ~{progress.remaining_s:.0f}s left"
    )


class TerminalProgressBar:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            self.stream.write("\r" + render(progress) + ("\n" if progress.done == progress.total else ""))
            self.stream.flush()
