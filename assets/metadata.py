"""Model-usage metadata, the same keys on every asset that calls a model."""

from __future__ import annotations

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from assets.previews import markdown_table
from resources import CallLedger, ModelResource

# Assets that call models share this Dagster concurrency pool, so that across runs no more
# of them hit the endpoints at once than `dagster instance concurrency set model_endpoints N`
# allows (unlimited until set).
MODEL_POOL = "model_endpoints"


def ledger_metadata(ledger: CallLedger, model: ModelResource | None = None, partition: str | None = None) -> dict[str, object]:
    """What the calls cost and how they went; `partition` limits it to one partition's
    calls, so that per-partition materializations add up to the run instead of each
    repeating its total."""
    summary = ledger.summary(partition=partition)
    breakers = {"breaker_states": MetadataValue.json(model.breaker_states())} if model is not None else {}
    return {
        "model_requests": summary.requests,
        "model_failed_requests": summary.failed_requests,
        "model_outage_requests": summary.outage_requests,
        "model_calls": summary.calls,
        "model_reasks": summary.reasks,
        "model_retries": summary.retries,
        "cache_hits": summary.cache_hits,
        "cache_hit_rate": round(summary.cache_hits / summary.calls, 3) if summary.calls else 0.0,
        "fallbacks": summary.fallbacks,
        "model_failed_calls": summary.failed_calls,
        "model_failures_by_endpoint": MetadataValue.json(summary.failures_by_endpoint),
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "cost_usd": summary.cost_usd,
        "latency_p50_s": summary.latency_p50_s,
        "latency_p95_s": summary.latency_p95_s,
        "calls_by_model": MetadataValue.json(summary.calls_by_model),
        "calls_by_tier": MetadataValue.json(summary.calls_by_tier),
        "tokens_by_model": MetadataValue.json(summary.tokens_by_model),
        "cost_by_model": MetadataValue.json(summary.cost_by_model),
        **breakers,
    }


def failed_requests_check_result(rows: pd.DataFrame, failed: pd.Series, shown: list[str], limit: float) -> AssetCheckResult:
    """A warning, not a block: a stage that fell back (extractive drafts, failed signals)
    still produced something valid, but a person should know its model calls failed.
    `rows` holds one model request per row, `failed` marks those that got no answer."""
    failures = rows[failed] if len(rows) else rows
    share = len(failures) / len(rows) if len(rows) else 0.0
    return AssetCheckResult(
        passed=share <= limit,
        severity=AssetCheckSeverity.WARN,
        description=f"{len(failures)} of {len(rows)} model requests failed ({share:.0%}; limit {limit:.0%})",
        metadata={
            "failed_requests": len(failures),
            "requests": len(rows),
            "failed_share": round(share, 3),
            "max_failed_request_share": limit,
            "failures": MetadataValue.md(markdown_table(failures[shown].head(10).to_dict(orient="records"))),
        },
    )


def cost_against_all_strong(ledger: CallLedger, model: ModelResource) -> dict[str, object]:
    """What the calls cost, and what the same tokens would have cost had every call gone to
    the `strong` tier: the saving that routing by tier buys, at the configured prices."""
    calls = [r for r in ledger.records if r.sent and not r.cache_hit]
    actual = sum(r.cost_usd for r in calls)
    all_strong = sum(model.cost("strong", r.prompt_tokens, r.completion_tokens) for r in calls)
    tokens_by_tier: dict[str, int] = {}
    for record in calls:
        tokens_by_tier[record.tier] = tokens_by_tier.get(record.tier, 0) + record.prompt_tokens + record.completion_tokens
    return {
        "cost_usd": round(actual, 6),
        "cost_if_all_strong_usd": round(all_strong, 6),
        "cost_ratio_to_all_strong": round(actual / all_strong, 3) if all_strong else None,
        "tokens_by_tier": MetadataValue.json(tokens_by_tier),
    }
