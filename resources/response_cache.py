"""The response cache: a model answer keyed by everything that determined it.

The key covers the model chain, the messages, the response schema and the sampling
parameters, so an unchanged input costs no call on re-materialization, and a run that
crashed half-way does not pay again for the calls it completed. SQLite on local
disk: one file, safe across the threads of one process and across processes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from resources.sqlite_store import open_sqlite


class CachedResponse(BaseModel):
    content: str
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int


def request_key(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_sqlite(
            self.path,
            "create table if not exists responses (key text primary key, value text not null, "
            "created_at text not null default current_timestamp);",
        )

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._db.execute("select value from responses where key = ?", (key,)).fetchone()
        return CachedResponse.model_validate_json(row[0]) if row else None

    def put(self, key: str, response: CachedResponse) -> None:
        with self._lock:
            self._db.execute(
                "insert or replace into responses (key, value) values (?, ?)", (key, response.model_dump_json())
            )
            self._db.commit()
