"""One way to open the gateway's SQLite files: WAL, shared across threads, patient with locks."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_sqlite(path: str | Path, schema: str) -> sqlite3.Connection:
    """Open (creating folders and tables as needed) a database used from many threads."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False, timeout=30)
    connection.execute("pragma journal_mode=wal")
    connection.executescript(schema)
    connection.commit()
    return connection
