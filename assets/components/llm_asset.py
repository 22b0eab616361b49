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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any

import dagster as dg
from pydantic import BaseModel

from assets.components.asset_spec import PipelineAssetSpec
from resources import ModelResource, ModelSession, Tier
from resources.gateway.model import MODEL_POOL
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
    prompt: Prompt = field(init=False, repr=False)

    def __post_init__(self) -> None:
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
            metadata={
                "prompt_version": self.call.prompt.version,
                "prompt_file": str(self.call.prompt_file),
                "tier": self.call.tier,
            },
        )

    def asset(self, body: Callable[[LlmRun], dg.Output]) -> dg.AssetsDefinition:
        """The asset, whose computation runs `body` in a model session opened for the call."""
        call = self.call

        @dg.asset(**self.spec.asset_keywords())
        def _llm_asset(context: dg.AssetExecutionContext, **inputs: Any) -> dg.Output:
            model: ModelResource = context.resources.model
            with model.session(context, compare_tiers=call.compare_tiers) as llm:
                return body(LlmRun(context=context, model=model, call=call, inputs=inputs, llm=llm))

        return _llm_asset
