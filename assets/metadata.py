"""Model-usage metadata, the same keys on every asset that calls a model."""

from __future__ import annotations

from dagster import MetadataValue

from resources import CallLedger, ModelResource

# Assets that call models share this Dagster concurrency pool, so that across runs no more
# of them hit the endpoints at once than `dagster instance concurrency set model_endpoints N`
# allows (unlimited until set).
MODEL_POOL = "model_endpoints"


def ledger_metadata(ledger: CallLedger, model: ModelResource | None = None) -> dict[str, object]:
    summary = ledger.summary()
    breakers = {"breaker_states": MetadataValue.json(model.breaker_states())} if model is not None else {}
    return {
        "model_calls": summary.calls,
        "model_reasks": summary.reasks,
        "model_retries": summary.retries,
        "cache_hits": summary.cache_hits,
        "cache_hit_rate": round(summary.cache_hits / summary.calls, 3) if summary.calls else 0.0,
        "fallbacks": summary.fallbacks,
        "model_failed_calls": summary.failed_calls,
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
