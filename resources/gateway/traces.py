"""The trace table: one row per model request, where a person can look it up later.

It answers "which prompt and which model produced this output": assets store the
trace id next to what a call produced, and the row holds the run, the asset, the
endpoint, the model, the prompt and the response (or their hashes, when content must
not be kept), latency, tokens, cost, cache hit, attempts and error. Failed and skipped
calls have rows too, so a run's outage can be named afterwards ("primary 503 x12,
circuit open x40") from `failures_by_endpoint`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from resources.gateway.ledger import CallRecord, is_outage
from resources.storage.state_store import POSTGRES_SCHEMA, StateStore, is_postgres, upsert_sql

Redaction = Literal["full", "hash", "none"]

COLUMNS = (
    "trace_id",
    "created_at",
    "run_id",
    "asset",
    "tier",
    "endpoint",
    "model",
    "prompt",
    "response",
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cache_hit",
    "fallback",
    "attempt",
    "reask",
    "error",
    "request_id",
    "partition",
    "error_kind",
    "fallback_reason",
)
# Tables made before these columns existed get them when opened.
ADDED_COLUMNS = {"request_id": "text", "partition": "text", "error_kind": "text", "fallback_reason": "text"}


class RunSpend(BaseModel):
    """What one run's recorded calls cost, summed over every process that recorded them."""

    usd: float = 0.0
    tokens: int = 0


class EndpointFailures(BaseModel):
    """How often one endpoint failed one way in a run: `count` failed or skipped calls, `attempts` requests sent."""

    endpoint: str
    kind: str
    count: int
    attempts: int

    @property
    def outage(self) -> bool:
        return is_outage(self.kind)


def _redact(text: str, redaction: Redaction) -> str:
    if redaction == "full":
        return text
    if redaction == "hash":
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return ""


class TraceStore:
    def __init__(self, location: str | Path, redaction: Redaction = "full"):
        self.redaction = redaction
        self._db = StateStore(
            location,
            "create table if not exists traces (trace_id text primary key, created_at text, run_id text, asset text, "
            "tier text, endpoint text, model text, prompt text, response text, latency_s real, prompt_tokens integer, "
            "completion_tokens integer, cost_usd real, cache_hit integer, fallback integer, attempt integer, "
            "reask integer, error text, request_id text, partition text, error_kind text, fallback_reason text); "
            "create index if not exists traces_by_run on traces (run_id, asset); "
            # Covers the run's spend, so that the budget check before each call reads the index alone.
            "create index if not exists traces_spend_by_run on traces (run_id, cost_usd, prompt_tokens, completion_tokens);",
            durable=False,
        )
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        if is_postgres(self._db.location):
            query = (
                "select column_name from information_schema.columns where table_schema = ? and table_name = 'traces'"
            )
            existing = {row[0] for row in self._db.fetchall(query, (POSTGRES_SCHEMA,))}
        else:
            existing = {row[0] for row in self._db.fetchall("select name from pragma_table_info('traces')")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in existing:
                self._db.execute(f"alter table traces add column {column} {kind}")

    def add(self, record: CallRecord, messages: list[dict[str, str]], response: str, run_id: str, asset: str) -> None:
        row = {
            **record.model_dump(include=set(COLUMNS)),
            "run_id": run_id,
            "asset": asset,
            "prompt": _redact(json.dumps(messages, ensure_ascii=False), self.redaction),
            "response": _redact(response, self.redaction),
        }
        values = [int(v) if isinstance(v, bool) else v for v in (row.get(c) for c in COLUMNS)]  # integer columns
        self._db.execute(upsert_sql("traces", COLUMNS, "trace_id"), values)

    def get_many(self, trace_ids: list[str], batch: int = 500) -> list[dict[str, object]]:
        rows: list[tuple] = []
        unique = list(dict.fromkeys(trace_ids))
        for start in range(0, len(unique), batch):
            ids = unique[start : start + batch]
            rows += self._db.fetchall(
                f"select {', '.join(COLUMNS)} from traces where trace_id in ({', '.join('?' * len(ids))})", ids
            )
        return [dict(zip(COLUMNS, row)) for row in rows]

    def get(self, trace_id: str) -> dict[str, object] | None:
        row = self._db.fetchone(f"select {', '.join(COLUMNS)} from traces where trace_id = ?", (trace_id,))
        return dict(zip(COLUMNS, row)) if row else None

    def run_spend(self, run_id: str) -> RunSpend:
        """The run's tokens and cost so far, whichever process or host made the calls: every
        call is a row here with its run id (whatever the redaction, which blanks only the
        prompt and the response), so this is what the run's budget is checked against."""
        row = self._db.fetchone(
            "select coalesce(sum(cost_usd), 0), coalesce(sum(prompt_tokens + completion_tokens), 0) "
            "from traces where run_id = ?",
            (run_id,),
        )
        usd, tokens = row if row else (0.0, 0)
        return RunSpend(usd=float(usd), tokens=int(tokens))

    def failures_by_endpoint(self, run_id: str, asset: str | None = None) -> list[EndpointFailures]:
        """A run's failed and skipped calls grouped by endpoint and error kind, most frequent first."""
        where, params = "run_id = ? and error is not null and error != ''", [run_id]
        if asset is not None:
            where, params = where + " and asset = ?", params + [asset]
        rows = self._db.fetchall(
            f"select endpoint, coalesce(error_kind, ''), count(*), coalesce(sum(attempt), 0) from traces where {where} "
            "group by endpoint, coalesce(error_kind, '') order by endpoint, count(*) desc, coalesce(error_kind, '')",
            params,
        )
        return [EndpointFailures(endpoint=e, kind=k or "error", count=c, attempts=a) for e, k, c, a in rows]

    def fallbacks_by_reason(self, run_id: str) -> dict[str, int]:
        """How often a refusal sent a run's request on (to a larger context window, to the content
        policy's endpoint, or cut to fit): counted as `CallRecord.starts_fallback` counts them."""
        rows = self._db.fetchall(
            "select fallback_reason, count(*) from traces where run_id = ? and fallback_reason is not null "
            "and fallback_reason != '' and attempt > 0 and reask = 0 group by fallback_reason order by fallback_reason",
            (run_id,),
        )
        return {reason: int(count) for reason, count in rows}
