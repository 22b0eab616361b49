"""Model-usage metadata, the same keys on every asset that calls a model."""

from __future__ import annotations

from dagster import MetadataValue

from resources import CallLedger


def ledger_metadata(ledger: CallLedger) -> dict[str, object]:
    summary = ledger.summary()
    return {
        "model_calls": summary.calls,
        "model_reasks": summary.reasks,
        "model_failed_calls": summary.failed_calls,
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "cost_usd": summary.cost_usd,
        "latency_p50_s": summary.latency_p50_s,
        "latency_p95_s": summary.latency_p95_s,
        "calls_by_model": MetadataValue.json(summary.calls_by_model),
        "calls_by_tier": MetadataValue.json(summary.calls_by_tier),
    }
