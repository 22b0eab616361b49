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

OUTAGE_KINDS = {"timeout", "connection error", "circuit open"}
RETRYABLE_STATUS = {408, 409, 429}


def is_outage(kind: str) -> bool:
    """Whether a failure means the endpoint did not answer at all: transport errors,
    timeouts, an open circuit, 5xx, and the 408/409/429 that outlasted every retry.
    An answer that stayed invalid, a refused key or a too-long input are not outages."""
    if kind in OUTAGE_KINDS:
        return True
    return kind.isdigit() and (int(kind) >= 500 or int(kind) in RETRYABLE_STATUS)


class CallRecord(BaseModel):
    """One endpoint's part in a request: served from cache, answered after `attempt` tries,
    failed after `attempt` tries (`error`, `error_kind`), or skipped (`attempt` 0, e.g. circuit open).

    `request_id` groups the records of one logical request (its endpoints and re-asks);
    `partition` labels whose request it was, so one partition's cost can be told apart.
    """

    trace_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    request_id: str = ""
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    partition: str = ""
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
    error_kind: str = ""  # "503", "429", "timeout", "connection error", "circuit open", "invalid output", ...
    # Why this endpoint was asked after a refusal: "context window", "content policy" or
    # "cut to fit context window"; empty for the chain's own order.
    fallback_reason: str = ""

    @property
    def sent(self) -> bool:
        """Whether this record stands for a call (or a cache hit), rather than a skipped endpoint."""
        return self.cache_hit or self.attempt > 0

    @property
    def starts_fallback(self) -> bool:
        """Whether this call took a request to an endpoint for a refusal's reason: its first call
        there (the re-asks that follow carry the reason too, but are not another fallback)."""
        return bool(self.fallback_reason) and self.attempt > 0 and self.reask == 0


class LedgerSummary(BaseModel):
    requests: int  # logical requests: one per item asked for, whatever its re-asks, retries and fallbacks
    failed_requests: int  # requests that got no valid answer
    outage_requests: int  # failed requests that no endpoint answered at all (see `is_outage`)
    calls: int  # calls made (each with its retries) plus cache hits
    failed_calls: int
    reasks: int
    retries: int
    cache_hits: int
    fallbacks: int
    fallbacks_by_reason: dict[str, int]  # refusals that sent a request on: context window, content policy, cut
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_p50_s: float
    latency_p95_s: float
    calls_by_model: dict[str, int]
    calls_by_tier: dict[str, int]
    tokens_by_model: dict[str, int]
    cost_by_model: dict[str, float]
    failures_by_endpoint: dict[str, dict[str, int]]  # endpoint -> error kind -> failed or skipped calls


class CallLedger:
    """The calls of one asset computation; `run_id` and `asset` label its trace rows."""

    def __init__(self, run_id: str = "", asset: str = "") -> None:
        self.run_id = run_id
        self.asset = asset
        self._lock = threading.Lock()
        self.records: list[CallRecord] = []
        self._by_partition: dict[str, list[CallRecord]] = {}  # a summary per partition is a lookup, not a scan

    def add(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)
            self._by_partition.setdefault(record.partition, []).append(record)

    def partitions(self) -> set[str]:
        """The partition labels the records carry ("" for calls made for no partition)."""
        with self._lock:
            return set(self._by_partition)

    def summary(self, partition: str | None = None) -> LedgerSummary:
        """Totals of every record, or of one partition's records only."""
        with self._lock:
            records = list(self.records) if partition is None else list(self._by_partition.get(partition, []))
        calls = [r for r in records if r.sent]
        latencies = np.array([r.latency_s for r in calls]) if calls else np.zeros(1)
        by_request: dict[str, list[CallRecord]] = {}
        for record in records:
            by_request.setdefault(record.request_id or record.trace_id, []).append(record)
        failed = [rs for rs in by_request.values() if not any(r.sent and not r.error for r in rs)]
        failures: dict[str, dict[str, int]] = {}
        for record in records:
            if record.error:
                kinds = failures.setdefault(record.endpoint, {})
                kinds[record.error_kind or "error"] = kinds.get(record.error_kind or "error", 0) + 1
        return LedgerSummary(
            requests=len(by_request),
            failed_requests=len(failed),
            outage_requests=sum(1 for rs in failed if all(is_outage(r.error_kind) for r in rs if r.error)),
            calls=len(calls),
            failed_calls=sum(1 for r in calls if r.error),
            reasks=sum(1 for r in calls if r.reask > 0),
            retries=sum(max(0, r.attempt - 1) for r in calls),
            cache_hits=sum(r.cache_hit for r in calls),
            fallbacks=sum(r.fallback for r in calls),
            fallbacks_by_reason=dict(Counter(r.fallback_reason for r in calls if r.starts_fallback)),
            prompt_tokens=sum(r.prompt_tokens for r in calls),
            completion_tokens=sum(r.completion_tokens for r in calls),
            cost_usd=round(sum(r.cost_usd for r in calls), 6),
            latency_p50_s=round(float(np.percentile(latencies, 50)), 3),
            latency_p95_s=round(float(np.percentile(latencies, 95)), 3),
            calls_by_model=dict(Counter(r.model for r in calls)),
            calls_by_tier=dict(Counter(r.tier for r in calls)),
            tokens_by_model=_sum_by_model(calls, lambda r: r.prompt_tokens + r.completion_tokens),
            cost_by_model={k: round(v, 6) for k, v in _sum_by_model(calls, lambda r: r.cost_usd).items()},
            failures_by_endpoint=failures,
        )


class BranchLedger(CallLedger):
    """The calls of one part of a computation (one item's), each also added to the computation's
    ledger: what the part cost is read here, and the computation's figures still hold it."""

    def __init__(self, trunk: CallLedger) -> None:
        super().__init__(run_id=trunk.run_id, asset=trunk.asset)
        self.trunk = trunk

    def add(self, record: CallRecord) -> None:
        super().add(record)
        self.trunk.add(record)


def _sum_by_model(records: list[CallRecord], value) -> dict:
    totals: dict = {}
    for record in records:
        totals[record.model] = totals.get(record.model, 0) + value(record)
    return totals
