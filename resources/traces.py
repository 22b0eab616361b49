"""The trace table: one row per model request, where a person can look it up later.

It answers "which prompt and which model produced this output": assets store the
trace id next to what a call produced, and the row holds the run, the asset, the
endpoint, the model, the prompt and the response (or their hashes, when content must
not be kept), latency, tokens, cost, cache hit, attempts and error.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Literal

from resources.ledger import CallRecord
from resources.sqlite_store import open_sqlite

Redaction = Literal["full", "hash", "none"]

COLUMNS = (
    "trace_id", "created_at", "run_id", "asset", "tier", "endpoint", "model", "prompt", "response",
    "latency_s", "prompt_tokens", "completion_tokens", "cost_usd", "cache_hit", "fallback", "attempt", "reask", "error",
)


def _redact(text: str, redaction: Redaction) -> str:
    if redaction == "full":
        return text
    if redaction == "hash":
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return ""


class TraceStore:
    def __init__(self, path: str | Path, redaction: Redaction = "full"):
        self.path = Path(path)
        self.redaction = redaction
        self._lock = threading.Lock()
        self._db = open_sqlite(
            self.path,
            "create table if not exists traces (trace_id text primary key, created_at text, run_id text, asset text, "
            "tier text, endpoint text, model text, prompt text, response text, latency_s real, prompt_tokens integer, "
            "completion_tokens integer, cost_usd real, cache_hit integer, fallback integer, attempt integer, "
            "reask integer, error text); create index if not exists traces_by_run on traces (run_id, asset);",
        )

    def add(self, record: CallRecord, messages: list[dict[str, str]], response: str, run_id: str, asset: str) -> None:
        row = {
            **record.model_dump(include=set(COLUMNS)),
            "run_id": run_id,
            "asset": asset,
            "prompt": _redact(json.dumps(messages, ensure_ascii=False), self.redaction),
            "response": _redact(response, self.redaction),
        }
        with self._lock:
            self._db.execute(
                f"insert or replace into traces ({', '.join(COLUMNS)}) values ({', '.join('?' * len(COLUMNS))})",
                [row.get(c) for c in COLUMNS],
            )
            self._db.commit()

    def get(self, trace_id: str) -> dict[str, object] | None:
        with self._lock:
            cursor = self._db.execute(f"select {', '.join(COLUMNS)} from traces where trace_id = ?", (trace_id,))
            row = cursor.fetchone()
        return dict(zip(COLUMNS, row)) if row else None
