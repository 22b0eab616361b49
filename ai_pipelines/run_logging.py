"""The console log of a run this process executes, as run config.

A command prints the run's own report; Dagster's console logger (a line per event at
DEBUG) is kept to the level asked for: `--log-level` (WARNING unless told) for the
commands, ERROR for the benchmarks, whose output is their measurement.
"""

from __future__ import annotations

from typing import Any


def console_logging(level: str) -> dict[str, Any]:
    """Run config that sets the console logger's level."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}
