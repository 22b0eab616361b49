"""The response cache: a model answer keyed by everything that determined it.

The key covers the model chain, the messages, the response schema and the sampling
parameters, so an unchanged input costs no call on re-materialization, and a run that
crashed half-way does not pay again for the calls it completed. A SQLite file on one
machine, Postgres in production (see state_store).

Only answers that validated against their schema are put here, under the original
request's key (whichever endpoint or re-ask produced them), and the gateway validates
an entry again on read: a cache must never make a failure permanent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from resources.storage.state_store import StateStore, upsert_sql

T = TypeVar("T", bound=BaseModel)


class CachedResponse(BaseModel):
    content: str
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    batch_id: str = ""  # the provider batch that answered it; empty for a live answer


def request_key(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache:
    def __init__(self, location: str | Path):
        self._db = StateStore(
            location,
            "create table if not exists responses (key text primary key, value text not null, "
            "created_at text not null default current_timestamp);",
            durable=False,
        )

    def get(self, key: str) -> CachedResponse | None:
        row = self._db.fetchone("select value from responses where key = ?", (key,))
        return CachedResponse.model_validate_json(row[0]) if row else None

    def valid(self, key: str, schema: type[T]) -> tuple[T, CachedResponse] | None:
        """A cached answer that still validates; anything else is ignored (and overwritten by the next valid one)."""
        cached = self.get(key)
        if cached is None:
            return None
        try:
            return schema.model_validate(json.loads(cached.content)), cached
        except (json.JSONDecodeError, ValidationError):
            return None

    def put(self, key: str, response: CachedResponse) -> None:
        self._db.execute(upsert_sql("responses", ["key", "value"], "key"), (key, response.model_dump_json()))
