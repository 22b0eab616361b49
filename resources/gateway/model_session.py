"""A model session: one asset computation's calls through the gateway, and their bookkeeping.

Every asset that calls a model needs the same things around its calls: a ledger labelled
with the run and the asset (so that trace rows name them and the run's budget counts
them), progress in the run's log for long fan-outs, and the usage figures in the
materialization's metadata, per partition when the step materializes several. Written
once here, as dagster-openai does with `get_client(context)`, an asset says only what it
asks:

    with model.session(context) as llm:
        answers = llm.map_traced_structured(requests, Schema, tier="fast", partitions=keys)

On exit the session writes the usage metadata itself, also when the body raised (the
step fails with the body's exception; the figures are then logged, since a failed step
records no materialization). Helpers that still take `model` and `ledger=` get
`llm.ledger`, so their calls land in the same figures.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar, Union

from dagster import AssetExecutionContext, AssetKey, MetadataValue, OpExecutionContext
from pydantic import BaseModel

from resources.gateway.ledger import CallLedger

if TYPE_CHECKING:
    from resources.gateway.model import Messages, ModelResource, Tier, ToolStep

T = TypeVar("T", bound=BaseModel)
StepContext = Union[AssetExecutionContext, OpExecutionContext]


class Progress(BaseModel):
    label: str
    done: int
    total: int
    rate: float  # items per second so far
    remaining_s: float


# Whoever runs the job in this process (the `run` command in a terminal) can listen to every
# fan-out's progress, to draw a progress bar.
_listeners: list[Callable[[Progress], None]] = []


def add_listener(listener: Callable[[Progress], None]) -> None:
    _listeners.append(listener)


def remove_listener(listener: Callable[[Progress], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


class ProgressLog:
    """Called once per finished item; logs about every tenth of the way (and at the end),
    so a long fan-out shows n of N, rate and time left without a line per item."""

    def __init__(self, log: Any, label: str, total: int):
        self._log, self._label, self._total = log, label, total
        self._done = 0
        self._started = time.monotonic()
        self._step = max(1, total // 10)
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self._done += 1
            done = self._done
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        progress = Progress(
            label=self._label,
            done=done,
            total=self._total,
            rate=rate,
            remaining_s=(self._total - done) / rate if rate else 0.0,
        )
        for listener in list(_listeners):
            listener(progress)
        if done % self._step and done != self._total:
            return
        self._log.info(f"{self._label}: {done} of {self._total} ({rate:.1f}/s, about {progress.remaining_s:.0f}s left)")


def usage_metadata(
    ledger: CallLedger, model: ModelResource | None = None, partition: str | None = None
) -> dict[str, object]:
    """What the calls cost and how they went, the same keys on every asset that calls a model;
    `partition` limits it to one partition's calls, so that per-partition materializations
    add up to the run instead of each repeating its total."""
    summary = ledger.summary(partition=partition)
    breakers = (
        {
            "breaker_states": MetadataValue.json(model.breaker_states()),
            "endpoint_tokens_per_s": MetadataValue.json(model.endpoint_paces()),
        }
        if model is not None
        else {}
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


def tier_comparison(ledger: CallLedger, model: ModelResource, partition: str | None = None) -> dict[str, object]:
    """What the calls cost, and what the same tokens would have cost had every call gone to
    the `strong` tier: the saving that routing by tier buys, at the configured prices."""
    records = ledger.records if partition is None else [r for r in ledger.records if r.partition == partition]
    calls = [r for r in records if r.sent and not r.cache_hit]
    actual = sum(r.cost_usd for r in calls)
    all_strong = sum(model.cost("strong", r.prompt_tokens, r.completion_tokens) for r in calls)
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


class ModelSession:
    """The gateway's call methods for one asset computation, without a ledger argument:
    every call lands in `ledger`, labelled with the run and the asset.

    On exit the usage metadata goes to the materialization: the step's totals when the
    asset is unpartitioned or the step materializes one partition; each partition's own
    figures when it materializes several and the calls carried `partition=`; the step's
    totals on each partition when none did. A partition without calls gets no figures.
    The block must end before the asset yields its outputs: Dagster takes an output's
    metadata when it is yielded.
    """

    def __init__(self, model: ModelResource, context: StepContext, asset: str = "", compare_tiers: bool = False):
        """`asset` names the asset that gets the figures when the step materializes several
        (a multi-asset); `compare_tiers` adds what the calls would have cost on the strong tier."""
        self.model = model
        self._context = context
        self._compare_tiers = compare_tiers
        if not asset and context.has_assets_def and len(context.assets_def.keys) > 1:
            raise ValueError(
                f"{context.op_def.name} materializes several assets: name the one whose materializations get the "
                "usage metadata, e.g. model.session(context, asset=...)"
            )
        self.asset_key: AssetKey | None = (
            AssetKey.from_user_string(asset) if asset else context.asset_key if context.has_assets_def else None
        )
        self.ledger = CallLedger(
            run_id=context.run_id, asset=self.asset_key.to_user_string() if self.asset_key else context.op_def.name
        )

    def __enter__(self) -> ModelSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        try:
            self._write_metadata()
        except Exception as problem:  # the figures never fail a step, nor hide why it failed
            self._context.log.warning(f"Model usage metadata not recorded: {type(problem).__name__}: {problem}")
        if error is not None:
            summary = self.ledger.summary()
            self._context.log.info(
                f"Model usage of {self.ledger.asset} before it failed: {summary.requests} requests, {summary.calls} calls, "
                f"{summary.prompt_tokens + summary.completion_tokens} tokens, ${summary.cost_usd:.6f}"
            )
        return False

    # --- the gateway's calls, recorded in this session's ledger ----------------------------------

    def structured(self, messages: Messages, schema: type[T], **options: Any) -> T:
        """A validated `schema` instance (options as for `traced_structured`)."""
        return self.traced_structured(messages, schema, **options)[0]

    def traced_structured(
        self,
        messages: Messages,
        schema: type[T],
        *,
        tier: Tier = "fast",
        max_tokens: int = 256,
        partition: str = "",
        temperature: float | None = None,
        sample: int = 0,
    ) -> tuple[T, str]:
        """As `ModelResource.traced_structured`: the answer and the trace id of its call."""
        return self.model.traced_structured(
            messages,
            schema,
            tier=tier,
            max_tokens=max_tokens,
            ledger=self.ledger,
            partition=partition,
            temperature=temperature,
            sample=sample,
        )

    def tool_step(
        self,
        messages: Messages,
        tools: Sequence[dict[str, Any]],
        *,
        tier: Tier = "strong",
        max_tokens: int = 512,
        partition: str = "",
    ) -> ToolStep:
        """As `ModelResource.tool_step`: one turn of a tool-using conversation."""
        return self.model.tool_step(
            messages, tools, tier=tier, max_tokens=max_tokens, ledger=self.ledger, partition=partition
        )

    def map_structured(self, requests: Sequence[Messages], schema: type[T], **options: Any) -> list[T | Exception]:
        """Many requests at bounded concurrency (options as for `map_traced_structured`)."""
        return [value for value, _ in self.map_traced_structured(requests, schema, **options)]

    def map_traced_structured(
        self,
        requests: Sequence[Messages],
        schema: type[T],
        *,
        tier: Tier = "fast",
        max_tokens: int = 256,
        on_done: Callable[[], None] | None = None,
        partitions: Sequence[str] | None = None,
    ) -> list[tuple[T | Exception, str]]:
        """As `ModelResource.map_traced_structured`; `partitions` labels each request's calls
        with the partition it is for, which is what per-partition metadata is made from."""
        return self.model.map_traced_structured(
            requests,
            schema,
            tier=tier,
            max_tokens=max_tokens,
            ledger=self.ledger,
            on_done=on_done,
            partitions=partitions,
        )

    def progress(self, label: str, total: int) -> ProgressLog:
        """A progress logger for `total` items in the run's log, to pass as `on_done`; one
        shared by several calls counts them all."""
        return ProgressLog(self._context.log, label, total)

    # --- the figures ------------------------------------------------------------------------------

    def metadata(self, partition: str | None = None) -> dict[str, object]:
        """The usage metadata of every call so far, or of one partition's calls."""
        figures = usage_metadata(self.ledger, self.model, partition)
        if self._compare_tiers:
            figures.update(tier_comparison(self.ledger, self.model, partition))
        return figures

    def _partition_keys(self) -> list[str]:
        """The partitions this step materializes of the session's asset; none when unpartitioned."""
        context = self._context
        if self.asset_key is None or not context.has_assets_def or context.assets_def.partitions_def is None:
            return []
        if not (context.has_partition_key or context.has_partition_key_range):
            return []
        return list(context.partition_keys)

    def _add(self, metadata: dict[str, object], partition: str | None = None) -> None:
        if self.asset_key is not None:
            self._context.add_asset_metadata(metadata, asset_key=self.asset_key, partition_key=partition)
        else:
            self._context.add_output_metadata(metadata)

    def _write_metadata(self) -> None:
        keys = self._partition_keys()
        if not keys:
            self._add(self.metadata())
            return
        if not self.ledger.records:  # a partition's materialization names only the calls made for it
            return
        labelled = self.ledger.partitions() - {""}
        if len(keys) == 1 or not labelled:
            self._add(self.metadata())
            return
        targeted = set(keys)
        for key in keys:
            if key in labelled:
                self._add(self.metadata(partition=key), partition=key)
        stray = [p for p in self.ledger.partitions() if p not in targeted]
        if stray:
            outside = sum(self.ledger.summary(partition=p).requests for p in stray)
            self._context.log.warning(
                f"{outside} model requests of {self.ledger.asset} carried no partition of this step "
                f"({', '.join(repr(p) for p in sorted(stray)[:5])}): they are in no partition's usage metadata"
            )
