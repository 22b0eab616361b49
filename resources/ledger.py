"""Accounting for model calls: what each materialization spent, and where.

A ledger belongs to one asset computation, so its summary can go straight into that
materialization's metadata and a person can judge the cost of an asset without logs.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import datetime, timezone

import numpy as np
from pydantic import BaseModel, Field


class CallRecord(BaseModel):
    """One request to the gateway: served from cache, or by one endpoint after `attempt` tries."""

    trace_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    tier: str
    model: str
    endpoint: str
    attempt: int = 1
    reask: int = 0
    cache_hit: bool = False
    fallback: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    error: str = ""


class LedgerSummary(BaseModel):
    calls: int
    failed_calls: int
    reasks: int
    retries: int
    cache_hits: int
    fallbacks: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_p50_s: float
    latency_p95_s: float
    calls_by_model: dict[str, int]
    calls_by_tier: dict[str, int]
    tokens_by_model: dict[str, int]
    cost_by_model: dict[str, float]


class CallLedger:
    """The calls of one asset computation; `run_id` and `asset` label its trace rows."""

    def __init__(self, run_id: str = "", asset: str = "") -> None:
        self.run_id = run_id
        self.asset = asset
        self._lock = threading.Lock()
        self.records: list[CallRecord] = []

    def add(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)

    def summary(self) -> LedgerSummary:
        with self._lock:
            records = list(self.records)
        latencies = np.array([r.latency_s for r in records]) if records else np.zeros(1)
        return LedgerSummary(
            calls=len(records),
            failed_calls=sum(1 for r in records if r.error),
            reasks=sum(1 for r in records if r.reask > 0),
            retries=sum(r.attempt - 1 for r in records),
            cache_hits=sum(r.cache_hit for r in records),
            fallbacks=sum(r.fallback for r in records),
            prompt_tokens=sum(r.prompt_tokens for r in records),
            completion_tokens=sum(r.completion_tokens for r in records),
            cost_usd=round(sum(r.cost_usd for r in records), 6),
            latency_p50_s=round(float(np.percentile(latencies, 50)), 3),
            latency_p95_s=round(float(np.percentile(latencies, 95)), 3),
            calls_by_model=dict(Counter(r.model for r in records)),
            calls_by_tier=dict(Counter(r.tier for r in records)),
            tokens_by_model=_sum_by_model(records, lambda r: r.prompt_tokens + r.completion_tokens),
            cost_by_model={k: round(v, 6) for k, v in _sum_by_model(records, lambda r: r.cost_usd).items()},
        )


def _sum_by_model(records: list[CallRecord], value) -> dict:
    totals: dict = {}
    for record in records:
        totals[record.model] = totals.get(record.model, 0) + value(record)
    return totals
