"""The Dagster instance: the embedded default's dagster.yaml, and what a process that
executes runs does to its instance before it starts.

A run over N documents writes about eight events per document (a planned and a
materialization event per partition of each per-document asset). Dagster writes them
one statement at a time unless `DAGSTER_EVENT_BATCH_SIZE` is set, and the Postgres
storage opens a new database connection for every statement unless it was told, as
the webserver tells it, to keep a pool. Both are Dagster's own switches; this module
turns them on for every process that loads the code location (the run command, the
webserver, the daemon, run and step workers). The embedded SQLite instance keeps its
connections open through `PooledSqliteEventLogStorage` (ai_pipelines/event_log_storage).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterInstance

EVENT_BATCH_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
# What earlier releases wrote into a new home; such a file is replaced by today's.
LEGACY_INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def instance_yaml(home: Path) -> str:
    """The embedded instance: Dagster's SQLite storage in `home`, its event log through
    pooled connections, telemetry and the UI's community popup off. Run and schedule
    storage are Dagster's defaults, in the places Dagster puts them."""
    return (
        "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
        "event_log_storage:\n  module: ai_pipelines.event_log_storage\n  class: PooledSqliteEventLogStorage\n"
        f"  config:\n    base_dir: {home.resolve() / 'history' / 'runs'}\n"
    )


def batch_event_writes(size: int) -> None:
    """Batched event writes, unless the environment already chose a size."""
    if size:
        os.environ.setdefault(EVENT_BATCH_VARIABLE, str(size))


def pool_connections(instance: DagsterInstance) -> None:
    """Keep database connections open for the life of the process (a no-op for SQLite).

    `optimize_for_webserver` is Dagster's public switch for a long-lived process: one
    pooled connection per storage plus overflow, and no statement timeout (0) here, since
    a run's writes must not be cut off the way a webserver's slow query may be.
    """
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=8)
