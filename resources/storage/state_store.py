"""Where the gateway and the approval log keep their state: a SQLite file for one
machine, or Postgres (schema `ai_pipelines`) when the Dagster instance lives there, so
that every run process, every celery worker and every host share one response cache,
one trace table and one approval log.

SQL is written once, with `?` placeholders and `insert ... on conflict ... do update`,
which both databases accept.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Sequence

POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg2://", "postgres://")
POSTGRES_SCHEMA = "ai_pipelines"


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def libpq_url(url: str) -> str:
    """SQLAlchemy's driver suffix (which dagster-postgres needs) means nothing to libpq."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def upsert_sql(table: str, columns: Sequence[str], key: str) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return (
        f"insert into {table} ({', '.join(columns)}) values ({', '.join('?' * len(columns))}) "
        f"on conflict ({key}) do update set {updates}"
    )


class StateStore:
    """One connection, shared by the threads of a process behind a lock."""

    def __init__(self, location: str | Path, schema: str, durable: bool = True):
        """`durable=False` (SQLite only) lets a commit return before the disk has it
        (synchronous=normal under WAL): the file stays consistent after a crash, but an OS
        crash or power cut can lose the last commits. Right for a cache and a trace table
        written on every model call; never for decisions such as approvals."""
        self.location = str(location)
        self._lock = threading.Lock()
        if is_postgres(self.location):
            import psycopg2

            self._db = psycopg2.connect(libpq_url(self.location))
            self._db.autocommit = True
            with self._db.cursor() as cursor:
                cursor.execute(f"create schema if not exists {POSTGRES_SCHEMA}; set search_path to {POSTGRES_SCHEMA}")
                cursor.execute(schema)
            self._placeholder = "%s"
        else:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.location, check_same_thread=False, timeout=30)
            self._db.execute("pragma journal_mode=wal")
            if not durable:
                self._db.execute("pragma synchronous=normal")
            self._db.executescript(schema)
            self._db.commit()
            self._placeholder = "?"

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self._placeholder)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement, committed; a failed one is rolled back, since an open SQLite write
        transaction would hold the file's lock and stall every other writer."""
        with self._lock:
            cursor = self._db.cursor()
            try:
                cursor.execute(self._sql(sql), tuple(params))
                self._db.commit()
            except Exception:
                self._db.rollback()
                raise
            finally:
                cursor.close()

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute(self._sql(sql), tuple(params))
            rows = cursor.fetchall()
            cursor.close()
        return rows

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None
