"""Library notices go to a log file, not to the terminal of a person running a command.

Dagster marks the beta and preview APIs the project builds on (backfill policies, data
versions, partitioned checks) with a warning on every definition that uses them. They
say something to whoever upgrades Dagster, nothing to whoever runs the digest, and on a
terminal they bury the lines that matter. The command line keeps them, once per place
in the code, in `<data_dir>/logs/library_warnings.log`.

The notices start when the asset modules are imported, before the settings (and so the
data directory) are known: importing this module routes them here, so the command line
imports it before anything that defines assets, and they are held until `write_to` names
the file. Every other warning reaches the terminal as before.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import TextIO

from dagster import BetaWarning, PreviewWarning, SupersessionWarning

NOTICES: tuple[type[Warning], ...] = (BetaWarning, PreviewWarning, SupersessionWarning)
LOG_NAME = "library_warnings.log"


class LibraryWarningLog:
    def __init__(self) -> None:
        self._pending: list[str] = []
        self._path: Path | None = None
        self._lock = threading.Lock()
        self._show_elsewhere = warnings.showwarning

    def install(self) -> None:
        """Route the notices here from now on (each once per place in the code)."""
        self._show_elsewhere = warnings.showwarning
        warnings.showwarning = self._show
        for category in NOTICES:
            warnings.filterwarnings("default", category=category)

    def write_to(self, path: Path) -> None:
        """Keep the notices in `path` (created with the first one), those held so far included."""
        with self._lock:
            self._path = path
            pending, self._pending = self._pending, []
        self._append(pending)

    @property
    def path(self) -> Path | None:
        return self._path

    def _show(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, NOTICES):
            self._show_elsewhere(message, category, filename, lineno, file, line)
            return
        text = warnings.formatwarning(message, category, filename, lineno, line)
        with self._lock:
            if self._path is None:
                self._pending.append(text)
                return
        self._append([text])

    def _append(self, texts: list[str]) -> None:
        if not texts or self._path is None:
            return
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8") as log:
                log.writelines(texts)


LIBRARY_WARNINGS = LibraryWarningLog()
LIBRARY_WARNINGS.install()
