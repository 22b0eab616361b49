"""The registry of provider batches: what was submitted, for which asset and run, and what became
of each request.

It lives in the gateway's state store, so the run that submits a batch, the sensor that polls
it and the run that reads its answers (three processes, maybe three hosts) share it. A batch
row holds what is needed to relaunch the waiting materialization (its partition tags and the
assets the first run selected from it downward), the request count and the expected price; a
line row holds the request as sent and its output's JSON schema, so that an answer is validated
by the sensor without the Python class that asked for it. A line's custom id is the response
cache key of the live request, which is how an answer reaches the cache and a request is known
to be in a batch already.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from pydantic import BaseModel, Field

from resources.storage.state_store import StateStore, upsert_sql

# The statuses after which a batch changes no more (OpenAI's Batch.status).
FINAL_STATUSES = frozenset({"completed", "expired", "cancelled", "failed"})
# What became of one line: still with the provider; answered validly (now in the cache); answered
# with content that broke its schema; failed by the provider; never run (the batch ended first).
LineOutcome = Literal["waiting", "answered", "invalid", "failed", "unanswered"]
# What the sensor did about an ended batch: nothing yet; launched the waiting materialization on
# its answers; reported its failure to a person; launched it to ask the unanswered live.
Handling = Literal["", "relaunched", "reported", "relaunched_live"]

_SCHEMA = (
    "create table if not exists provider_batches (batch_id text primary key, endpoint text not null, "
    "model text not null, tier text not null, asset text not null, origin_run_id text not null, "
    "partitions text not null, run_tags text not null, selection text not null, requests integer not null, "
    "expected_cost_usd real not null, status text not null, reason text not null, output_file_id text not null, "
    "error_file_id text not null, answered integer not null, invalid integer not null, failed integer not null, "
    "unanswered integer not null, cost_usd real not null, handled text not null, created_at text not null, "
    "updated_at text not null); "
    "create index if not exists provider_batches_open on provider_batches (handled); "
    "create table if not exists provider_batch_lines (batch_id text not null, custom_id text not null, "
    "tier text not null, partition text not null, body text not null, output_schema text not null, "
    "outcome text not null, reason text not null, cost_usd real not null, primary key (batch_id, custom_id)); "
    "create index if not exists provider_batch_lines_by_key on provider_batch_lines (custom_id);"
)
_ROWS_PER_STATEMENT = 200  # a multi-row insert stays under either database's limit on parameters
# The status of requests a run has claimed and is uploading: not yet a batch at the provider.
SUBMITTING = "submitting"
# A claim older than this was left by a run that died while submitting: it holds nothing.
CLAIM_SECONDS = 600
# The Postgres advisory lock under which requests are claimed (any constant no other lock uses).
CLAIM_LOCK = 0x0BA7_C4E5


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Batches that hold their requests: all but the claims a dead run left (see CLAIM_SECONDS).
_LIVE_CLAIM = f"(b.status != '{SUBMITTING}' or b.created_at >= ?)"


def _claims_since() -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=CLAIM_SECONDS)).isoformat(timespec="seconds")


class ProviderBatch(BaseModel):
    """One submitted batch and what the registry knows of it."""

    batch_id: str
    endpoint: str
    model: str
    tier: str
    asset: str = Field(description="The asset whose materialization waits for it.")
    origin_run_id: str = Field(description="The run that submitted it.")
    partitions: list[str] = []
    run_tags: dict[str, str] = Field(default={}, description="The partition tags a follow-up run repeats.")
    selection: list[str] = Field(default=[], description="The asset and what its run selected downstream of it.")
    requests: int
    expected_cost_usd: float
    status: str = "validating"
    reason: str = ""
    output_file_id: str = ""
    error_file_id: str = ""
    answered: int = 0
    invalid: int = 0
    failed: int = 0
    unanswered: int = 0
    cost_usd: float = 0.0
    handled: Handling = ""
    created_at: str = Field(default_factory=now)
    updated_at: str = Field(default_factory=now)

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES


class BatchLine(BaseModel):
    """One request of a batch, by the response cache key of the live request (its custom id)."""

    batch_id: str
    custom_id: str
    tier: str
    partition: str = ""
    body: dict[str, Any]
    output_schema: dict[str, Any]
    outcome: LineOutcome = "waiting"
    reason: str = ""
    cost_usd: float = 0.0


class BatchFigures(BaseModel):
    """What a batch answered for a follow-up run, over all its partitions or one."""

    answered: int = 0
    cost_usd: float = 0.0


_BATCH_COLUMNS = tuple(ProviderBatch.model_fields)
_LINE_COLUMNS = tuple(BatchLine.model_fields)
_JSON_BATCH_FIELDS = ("partitions", "run_tags", "selection")
_JSON_LINE_FIELDS = ("body", "output_schema")


def _stored(model: BaseModel, json_fields: Sequence[str]) -> list[Any]:
    values = model.model_dump()
    return [json.dumps(values[c]) if c in json_fields else values[c] for c in type(model).model_fields]


def _read(cls: type[BaseModel], columns: Sequence[str], row: Sequence[Any], json_fields: Sequence[str]) -> Any:
    return cls.model_validate({c: json.loads(v) if c in json_fields else v for c, v in zip(columns, row)})


class BatchRegistry:
    def __init__(self, location: str | Path) -> None:
        self._db = StateStore(location, _SCHEMA)

    def claim(self, batch: ProviderBatch, lines: Sequence[BatchLine]) -> list[BatchLine]:
        """Registers `batch` (status `submitting`) with those of `lines` no other batch holds, and
        returns them: in one transaction every process runs alone, so a request is claimed once."""
        with self._db.transaction(CLAIM_LOCK) as claiming:
            held: set[str] = set()
            keys = [line.custom_id for line in lines]
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                held |= {
                    row[0]
                    for row in claiming.fetchall(
                        f"select l.custom_id from provider_batch_lines l join provider_batches b on b.batch_id = "
                        f"l.batch_id where l.custom_id in ({', '.join('?' * len(chunk))}) and {_LIVE_CLAIM}",
                        [*chunk, _claims_since()],
                    )
                }
            free = [line for line in lines if line.custom_id not in held]
            if free:
                for statement, values in self._line_inserts(free):
                    claiming.execute(statement, values)
                claiming.execute(
                    upsert_sql("provider_batches", _BATCH_COLUMNS, "batch_id"), _stored(batch, _JSON_BATCH_FIELDS)
                )
            return free

    def rename(self, claim_id: str, batch: ProviderBatch) -> None:
        """A claim, submitted: its lines and its row take the provider's batch id and status."""
        with self._db.transaction(CLAIM_LOCK) as renaming:
            renaming.execute(
                "update provider_batch_lines set batch_id = ? where batch_id = ?", (batch.batch_id, claim_id)
            )
            renaming.execute("delete from provider_batches where batch_id = ?", (claim_id,))
            batch.updated_at = now()
            renaming.execute(
                upsert_sql("provider_batches", _BATCH_COLUMNS, "batch_id"), _stored(batch, _JSON_BATCH_FIELDS)
            )

    def forget(self, claim_id: str) -> None:
        """A claim whose submission failed: its requests are free to be asked again."""
        with self._db.transaction(CLAIM_LOCK) as forgetting:
            forgetting.execute("delete from provider_batch_lines where batch_id = ?", (claim_id,))
            forgetting.execute("delete from provider_batches where batch_id = ?", (claim_id,))

    def add(self, batch: ProviderBatch, lines: Sequence[BatchLine]) -> None:
        """A new batch and its lines; the lines go first, so a batch is never listed without them."""
        self.save_lines(lines)
        self.save(batch)

    def save(self, batch: ProviderBatch) -> None:
        batch.updated_at = now()
        self._db.execute(upsert_sql("provider_batches", _BATCH_COLUMNS, "batch_id"), _stored(batch, _JSON_BATCH_FIELDS))

    def save_lines(self, lines: Sequence[BatchLine]) -> None:
        for statement, values in self._line_inserts(lines):
            self._db.execute(statement, values)

    @staticmethod
    def _line_inserts(lines: Sequence[BatchLine]) -> list[tuple[str, list[Any]]]:
        """Multi-row upserts of `lines`, each under either database's limit on parameters."""
        updates = ", ".join(f"{c} = excluded.{c}" for c in _LINE_COLUMNS if c not in ("batch_id", "custom_id"))
        statements = []
        for start in range(0, len(lines), _ROWS_PER_STATEMENT):
            chunk = lines[start : start + _ROWS_PER_STATEMENT]
            row = f"({', '.join('?' * len(_LINE_COLUMNS))})"
            statements.append(
                (
                    f"insert into provider_batch_lines ({', '.join(_LINE_COLUMNS)}) values "
                    f"{', '.join([row] * len(chunk))} on conflict (batch_id, custom_id) do update set {updates}",
                    [value for line in chunk for value in _stored(line, _JSON_LINE_FIELDS)],
                )
            )
        return statements

    def get(self, batch_id: str) -> ProviderBatch | None:
        row = self._db.fetchone(
            f"select {', '.join(_BATCH_COLUMNS)} from provider_batches where batch_id = ?", (batch_id,)
        )
        return _read(ProviderBatch, _BATCH_COLUMNS, row, _JSON_BATCH_FIELDS) if row else None

    def batches(self, unhandled_only: bool = False, limit: int = 100) -> list[ProviderBatch]:
        """The latest batches first; `unhandled_only`: those the sensor has not settled yet."""
        # Claims still uploading are no batch at the provider yet: nothing to poll.
        where = f"where handled = '' and status != '{SUBMITTING}'" if unhandled_only else ""
        rows = self._db.fetchall(
            f"select {', '.join(_BATCH_COLUMNS)} from provider_batches {where} order by created_at desc, batch_id desc "
            "limit ?",
            (limit,),
        )
        return [_read(ProviderBatch, _BATCH_COLUMNS, row, _JSON_BATCH_FIELDS) for row in rows]

    def lines(self, batch_id: str) -> list[BatchLine]:
        rows = self._db.fetchall(
            f"select {', '.join(_LINE_COLUMNS)} from provider_batch_lines where batch_id = ?", (batch_id,)
        )
        return [_read(BatchLine, _LINE_COLUMNS, row, _JSON_LINE_FIELDS) for row in rows]

    def holding(self, keys: Iterable[str]) -> dict[str, ProviderBatch]:
        """The latest batch that holds each of `keys` (a request sent before), for those that one holds."""
        keys = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.fetchall(
                "select l.custom_id, l.batch_id from provider_batch_lines l join provider_batches b "
                f"on b.batch_id = l.batch_id where l.custom_id in ({', '.join('?' * len(chunk))}) and {_LIVE_CLAIM} "
                "order by b.created_at, b.batch_id",
                [*chunk, _claims_since()],
            )
            found.update(dict(rows))  # the later batch wins
        batches = {batch_id: self.get(batch_id) for batch_id in set(found.values())}
        return {key: batch for key, batch_id in found.items() if (batch := batches[batch_id]) is not None}

    def figures(self, batch_id: str, partition: str | None = None) -> BatchFigures:
        """Its valid answers, and what all its answers cost (an invalid answer is paid for too)."""
        where, params = "batch_id = ?", [batch_id]
        if partition is not None:
            where, params = where + " and partition = ?", params + [partition]
        row = self._db.fetchone(
            "select coalesce(sum(case when outcome = 'answered' then 1 else 0 end), 0), coalesce(sum(cost_usd), 0) "
            f"from provider_batch_lines where {where}",
            params,
        )
        answered, cost = row if row else (0, 0.0)
        return BatchFigures(answered=int(answered), cost_usd=round(float(cost), 6))
