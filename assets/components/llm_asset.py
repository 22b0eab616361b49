"""An asset whose work is a declared model call, declared once: in YAML when one call per
row is all it does (assets/components/llm_step.py), in Python when it does more (grounding
the answers in their evidence, a vote of routing tiers).

Either way the call is a value (the prompt file, the answer's schema, the tier and the
token budget) and the asset is built from it the same way, so the two cannot drift apart:
the prompt's hash and the schema's are in the code version (editing the prompt file marks
the asset changed and, once it is re-materialized, what reads it stale), the metadata names
the prompt and the tier, and every run opens one model session for the asset and hands its
body an `LlmRun`.
"""

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any

import dagster as dg
from pydantic import BaseModel

from assets.components.asset_spec import PipelineAssetSpec
from resources import ModelResource, ModelSession, Tier
from resources.gateway.model import MODEL_POOL
from resources.gateway.provider_batches import PENDING_BATCH_TAG, WAITING_STATUS, BatchPending
from resources.gateway.request import ContextOverflow
from resources.gateway.tier_routing import RoutingPolicy
from resources.prompts import Prompt


@dataclass(frozen=True, kw_only=True)
class LlmCall:
    """One structured model call as declared; the prompt is read from its file when declared."""

    prompt_file: Path
    answer: type[BaseModel]
    tier: Tier = "fast"
    max_tokens: int = 400
    # Also record what the calls would have cost on the strong tier.
    compare_tiers: bool = False
    # A prompt no endpoint's context window takes: fail the item ("fallback": only a larger
    # window is tried), or cut its longest message to fit and ask again ("cut").
    context_overflow: ContextOverflow = "fallback"
    # Choose the tier per item from the measured pass rates of the step's answers (`tier` is
    # then unused); see resources/gateway/tier_routing.py.
    routing: RoutingPolicy | None = None
    # A bulk materialization may send its requests through a batch-capable endpoint's batch API
    # at the batch price, and wait for the answers (resources/gateway/provider_batches.py).
    batch: bool = False
    prompt: Prompt = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.routing is not None and (problems := self.routing.problems()):
            raise ValueError("; ".join(f"routing.{name}: {problem}" for name, problem in problems))
        template = self.prompt_file.read_text(encoding="utf-8")
        object.__setattr__(self, "prompt", Prompt(name=self.prompt_file.stem, template=template))


@dataclass
class LlmRun:
    """What an LLM asset's body gets: its declared call, its loaded inputs, and the run's
    context and model session (the gateway for this asset: its calls, ledger and usage metadata)."""

    context: dg.AssetExecutionContext
    model: ModelResource
    call: LlmCall
    inputs: dict[str, Any]
    llm: ModelSession

    @property
    def prompt(self) -> Prompt:
        return self.call.prompt

    @property
    def schema(self) -> type[BaseModel]:
        return self.call.answer

    def resource(self, key: str) -> Any:
        return getattr(self.context.resources, key)


@dataclass(frozen=True, kw_only=True)
class LlmAsset:
    """A warehouse table written by a body that asks the models through a declared call."""

    name: str
    group: str
    description: str | None = None
    call: LlmCall
    rows: type[BaseModel]
    # Upstream assets, handed to the body in `LlmRun.inputs` by key.
    ins: Sequence[str]
    partitions: dg.PartitionsDefinition | None = None
    # Resources the body reads beside the model (`LlmRun.resource`).
    resources: AbstractSet[str] = frozenset()
    pool: str = MODEL_POOL
    # Bump when the body's code changes what the asset produces.
    version: int = 1
    # Beside the call and the inputs, what shapes the answers: a YAML step's item table, key
    # column and rules. A Python body reads its inputs whole: no item table, no key column.
    shaped_by: tuple[object, ...] = ("", "")

    @property
    def code_version(self) -> str:
        """The version, the prompt's hash and a hash of everything else that shapes the answers."""
        call = self.call
        shape = [call.answer.model_json_schema(), call.tier, call.max_tokens, list(self.ins), *self.shaped_by]
        if call.context_overflow != "fallback":  # cut answers differ; the default leaves versions as they were
            shape.append(call.context_overflow)
        digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.version}-{call.prompt.version}-{digest}"

    @property
    def spec(self) -> PipelineAssetSpec:
        return PipelineAssetSpec(
            name=self.name,
            group=self.group,
            description=self.description,
            code_version=self.code_version,
            rows=self.rows,
            partitions=self.partitions,
            kinds={"openai"},
            calls_model=True,
            pool=self.pool,
            ins=self.ins,
            required_resource_keys={"model", *self.resources},
            # A materialization waiting for a provider batch stores nothing until its answers are in.
            output_required=not self.call.batch,
            metadata={
                "prompt_version": self.call.prompt.version,
                "prompt_file": str(self.call.prompt_file),
                # A routed call's tier is chosen per item; its materializations say which and why.
                "tier": self.call.tier if self.call.routing is None else "routed",
            },
        )

    def asset(self, body: Callable[[LlmRun], dg.Output]) -> dg.AssetsDefinition:
        """The asset, whose computation runs `body` in a model session opened for the call."""
        call = self.call

        @dg.asset(**self.spec.asset_keywords())
        def _llm_asset(context: dg.AssetExecutionContext, **inputs: Any) -> Iterator[dg.Output]:
            model: ModelResource = context.resources.model
            try:
                with model.session(context, compare_tiers=call.compare_tiers, batch=call.batch) as llm:
                    output = body(LlmRun(context=context, model=model, call=call, inputs=inputs, llm=llm))
            except BatchPending as pending:
                report_pending_batch(context, pending)
                return  # no output: what is downstream of it in this run is skipped
            yield output

        return _llm_asset


def report_pending_batch(context: dg.AssetExecutionContext, pending: BatchPending) -> None:
    """Says, where a person looks, why the asset has no new materialization: an observation per
    partition (the asset's page) and a tag on the run (the runs list) name the batch it waits for."""
    ids = ", ".join(b.batch_id for b in pending.batches)
    metadata = {
        "batch_id": ids,
        "status": WAITING_STATUS,
        "provider_status": ", ".join(sorted({b.status for b in pending.batches})),
        "requests": sum(b.requests for b in pending.batches),
        "expected_cost_usd": round(sum(b.expected_cost_usd for b in pending.batches), 6),
        "submitted_at": min(b.created_at for b in pending.batches),
        "submitted_by_run": ", ".join(sorted({b.origin_run_id for b in pending.batches})),
    }
    keys = context.partition_keys if context.has_partition_key or context.has_partition_key_range else [None]
    for key in keys:
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, partition=key, metadata=metadata))
    context.instance.add_run_tags(context.run_id, {PENDING_BATCH_TAG: ids})
    how = "submitted by this run" if pending.submitted else "submitted earlier"
    context.log.info(
        f"{context.asset_key.to_user_string()} waits for provider batch {ids} ({metadata['requests']} requests, "
        f"{how}, expected to cost at most ${metadata['expected_cost_usd']}); provider_batch_sensor launches it again "
        "once the answers are in"
    )
