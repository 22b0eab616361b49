"""A step's model usage in its materialization's metadata: the same keys on every asset that
calls a model, per partition when the step materializes several.

Each partition's figures are its own calls', so that per-partition materializations add up
to the run instead of each repeating its total. An asset check's figures go in its result,
which the check builds itself; a failed step records no materialization, so its figures
are logged instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Union

from dagster import AssetCheckExecutionContext, AssetExecutionContext, AssetKey, MetadataValue, OpExecutionContext

from resources.gateway.config import GatewayConfig
from resources.gateway.ledger import CallLedger

if TYPE_CHECKING:
    from resources.gateway.gateway import Gateway

StepContext = Union[AssetExecutionContext, OpExecutionContext, AssetCheckExecutionContext]
Figures = Callable[[Union[str, None]], dict[str, object]]


def usage_metadata(
    ledger: CallLedger, gateway: Gateway | None = None, partition: str | None = None
) -> dict[str, object]:
    """What the calls cost and how they went; `partition` limits it to one partition's calls."""
    summary = ledger.summary(partition=partition)
    breakers = (
        {
            "breaker_states": MetadataValue.json(gateway.breaker_states()),
            "endpoint_tokens_per_s": MetadataValue.json(gateway.endpoint_paces()),
        }
        if gateway is not None
        else {}
    )
    caps = gateway.spend_caps() if gateway is not None else []
    if caps:  # shared by every run: where each stands in its period as this step ends
        breakers["spend_caps"] = MetadataValue.json(
            {
                c.name: {
                    "period": f"{c.period} {c.period_start}",
                    "spent_usd": c.spent_usd,
                    "limit_usd": c.limit_usd,
                    "spent_tokens": c.spent_tokens,
                    "limit_tokens": c.limit_tokens,
                }
                for c in caps
            }
        )
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
        "fallbacks_by_reason": MetadataValue.json(summary.fallbacks_by_reason),
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


def tier_comparison(ledger: CallLedger, config: GatewayConfig, partition: str | None = None) -> dict[str, object]:
    """What the calls cost, and what the same tokens would have cost had every call gone to
    the `strong` tier: the saving that routing by tier buys, at the configured prices."""
    records = ledger.records if partition is None else [r for r in ledger.records if r.partition == partition]
    calls = [r for r in records if r.sent and not r.cache_hit]
    actual = sum(r.cost_usd for r in calls)
    all_strong = sum(config.cost("strong", r.prompt_tokens, r.completion_tokens) for r in calls)
    tokens_by_tier: dict[str, int] = {}
    for record in calls:
        tokens_by_tier[record.tier] = (
            tokens_by_tier.get(record.tier, 0) + record.prompt_tokens + record.completion_tokens
        )
    return {
        "cost_usd": round(actual, 6),
        "cost_if_all_strong_usd": round(all_strong, 6),
        "cost_ratio_to_all_strong": round(actual / all_strong, 3) if all_strong else None,
        "tokens_by_tier": MetadataValue.json(tokens_by_tier),
    }


class StepUsage:
    """Where one step's figures go, and under which run and asset its calls are recorded.

    To the materialization: the step's totals when the asset is unpartitioned or the step
    materializes one partition; each partition's own figures when it materializes several
    and the calls carried `partition=`; the step's totals on each partition when none did.
    A partition without calls gets no figures. An asset check's calls are recorded under
    `<asset>:<check>`, and its figures are left to its result.
    """

    def __init__(self, context: StepContext, asset: str = "") -> None:
        """`asset` names the asset that gets the figures when the step materializes several (a multi-asset)."""
        self._context = context
        self.asset_key: AssetKey | None = None
        if isinstance(context, AssetCheckExecutionContext):
            specs = context.check_specs
            if len(specs) != 1:
                raise ValueError(f"{context.op_def.name} runs several checks: open one session per check")
            self.run_id = context.run.run_id
            self.label = f"{specs[0].asset_key.to_user_string()}:{specs[0].name}"
            return
        if not asset and context.has_assets_def and len(context.assets_def.keys) > 1:
            raise ValueError(
                f"{context.op_def.name} materializes several assets: name the one whose materializations get the "
                "usage metadata, e.g. model.session(context, asset=...)"
            )
        self.asset_key = (
            AssetKey.from_user_string(asset) if asset else context.asset_key if context.has_assets_def else None
        )
        self.run_id = context.run_id
        self.label = self.asset_key.to_user_string() if self.asset_key else context.op_def.name

    @property
    def log(self):
        return self._context.log

    def close(self, ledger: CallLedger, figures: Figures, error: BaseException | None) -> None:
        """The figures written; never a failure of the step, nor a mask over why it failed."""
        try:
            self.write(ledger, figures)
        except Exception as problem:
            self.log.warning(f"Model usage metadata not recorded: {type(problem).__name__}: {problem}")
        if error is not None:
            summary = ledger.summary()
            self.log.info(
                f"Model usage of {ledger.asset} before it failed: {summary.requests} requests, {summary.calls} calls, "
                f"{summary.prompt_tokens + summary.completion_tokens} tokens, ${summary.cost_usd:.6f}"
            )

    def write(self, ledger: CallLedger, figures: Figures) -> None:
        if isinstance(self._context, AssetCheckExecutionContext):
            return
        keys = self._partition_keys()
        if not keys:
            self._add(figures(None))
            return
        if not ledger.records:  # a partition's materialization names only the calls made for it
            return
        labelled = ledger.partitions() - {""}
        if len(keys) == 1 or not labelled:
            self._add(figures(None))
            return
        targeted = set(keys)
        for key in keys:
            if key in labelled:
                self._add(figures(key), partition=key)
        stray = [p for p in ledger.partitions() if p not in targeted]
        if stray:
            outside = sum(ledger.summary(partition=p).requests for p in stray)
            self.log.warning(
                f"{outside} model requests of {ledger.asset} carried no partition of this step "
                f"({', '.join(repr(p) for p in sorted(stray)[:5])}): they are in no partition's usage metadata"
            )

    def _partition_keys(self) -> list[str]:
        """The partitions this step materializes of the asset; none when unpartitioned."""
        context = self._context
        assert not isinstance(context, AssetCheckExecutionContext)
        if self.asset_key is None or not context.has_assets_def or context.assets_def.partitions_def is None:
            return []
        if not (context.has_partition_key or context.has_partition_key_range):
            return []
        return list(context.partition_keys)

    def _add(self, metadata: dict[str, object], partition: str | None = None) -> None:
        context = self._context
        assert not isinstance(context, AssetCheckExecutionContext)
        if self.asset_key is not None:
            context.add_asset_metadata(metadata, asset_key=self.asset_key, partition_key=partition)
        else:
            context.add_output_metadata(metadata)
