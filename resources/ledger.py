"""Accounting for model calls: what each materialization spent, and where.

A ledger belongs to one asset computation, so its summary can go straight into that
materialization's metadata and a person can judge the cost of an asset without logs.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
from pydantic import BaseModel


class CallRecord(BaseModel):
    """One request to the gateway: served from cache, or by one endpoint after `attempt` tries."""

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


class CallLedger:
    def __init__(self) -> None:
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
        )
