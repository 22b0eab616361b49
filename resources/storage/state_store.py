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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg2://", "postgres://")
POSTGRES_SCHEMA = "ai_pipelines"
BUSY_SECONDS = 30  # how long a SQLite statement waits for another process's write
SCHEMA_LOCK = 0x5C4E_3A11  # the Postgres advisory lock under which tables are created


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


def _write_ahead_log(connection: sqlite3.Connection) -> None:
    """Switches a SQLite file to WAL. Two processes opening a fresh file at once both switch it,
    and SQLite answers the second "database is locked" at once, without waiting as the busy
    timeout waits for a write: so the switch is tried again until the timeout (the file is in
    WAL once either has switched it)."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            connection.execute("pragma journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
                # `create ... if not exists` is not safe in Postgres when two processes run it at
                # once on a fresh database (one fails on the catalog's unique index), and processes
                # do start together (celery workers, a run beside a sensor): they take turns.
                cursor.execute("select pg_advisory_lock(%s)", (SCHEMA_LOCK,))
                try:
                    cursor.execute(
                        f"create schema if not exists {POSTGRES_SCHEMA}; set search_path to {POSTGRES_SCHEMA}"
                    )
                    cursor.execute(schema)
                finally:
                    cursor.execute("select pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
            self._placeholder = "%s"
        else:
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.location, check_same_thread=False, timeout=BUSY_SECONDS)
            _write_ahead_log(self._db)
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

    @contextmanager
    def transaction(self, lock: int) -> Iterator[Transaction]:
        """One transaction that every process sharing the store runs alone: what it reads is
        still true when it writes (a check, then a reservation). SQLite takes the file's write
        lock at the start (`begin immediate`); Postgres an advisory lock numbered `lock`, held
        until the transaction ends, so other tables' writers are not held up."""
        with self._lock:
            cursor = self._db.cursor()
            try:
                cursor.execute("begin immediate" if self._placeholder == "?" else "begin")
                try:
                    if self._placeholder != "?":
                        cursor.execute("select pg_advisory_xact_lock(%s)", (lock,))
                    yield Transaction(cursor, self._sql)
                except BaseException:
                    cursor.execute("rollback")
                    raise
                cursor.execute("commit")
            finally:
                cursor.close()


class Transaction:
    """The statements of one `StateStore.transaction`, with the store's `?` placeholders."""

    def __init__(self, cursor: Any, sql: Any) -> None:
        self._cursor = cursor
        self._to_sql = sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._to_sql(sql), tuple(params))

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._cursor.execute(self._to_sql(sql), tuple(params))
        return self._cursor.fetchall()
