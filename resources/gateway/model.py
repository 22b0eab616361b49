"""The model resource: the gateway's settings as a Dagster resource, and the way to a session.

An asset or check asks `model.session(context)` for the calls of its computation; code
outside a Dagster run asks `model.open_session()`. No call is made on the resource itself:
the session owns the run's bookkeeping, so no call can miss the ledger, the budget or the
usage metadata. What the resource holds at run time (clients, breakers, pools, caches, the
local server) is built on the first session, from the declared settings alone.
"""

from __future__ import annotations

import threading
from typing import Any

from dagster import AssetExecutionContext, ConfigurableResource
from pydantic import PrivateAttr

from resources.gateway.config import GatewayConfig
from resources.gateway.gateway import Gateway
from resources.gateway.ledger import CallLedger
from resources.gateway.provider_batches import BatchScope, ProviderBatches
from resources.gateway.session import ModelSession
from resources.gateway.step_usage import StepContext, StepUsage

# Assets that call models share this Dagster concurrency pool, so that across runs no more
# of them hit the endpoints at once than `dagster instance concurrency set model_endpoints N`
# allows (unlimited until set; `ai-pipelines stack` sets it from AI_PIPELINES_MODEL_POOL_LIMIT).
MODEL_POOL = "model_endpoints"


class ModelResource(GatewayConfig, ConfigurableResource):
    """Chat models by task tier over a fallback chain of OpenAI-compatible endpoints.

    The primary endpoint is given by the flat fields (leave `base_url` empty for the
    embedded local model, started on first use); `fallbacks` follow it in order.
    """

    _gateway: Gateway | None = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def session(
        self, context: StepContext, asset: str = "", compare_tiers: bool = False, batch: bool = False
    ) -> ModelSession:
        """The calls of one asset computation or check: `with model.session(context) as llm:` records
        them under the run and the asset (`<asset>:<check>` for a check), and on exit writes the
        usage metadata to the materialization (a check puts `llm.metadata()` in its result).

        `asset` names the asset that gets the figures when the step materializes several (a
        multi-asset); `compare_tiers` adds what the calls would have cost on the strong tier; `batch`
        lets a bulk materialization of one asset go through the provider batch API (provider_batches)."""
        step = StepUsage(context, asset)
        ledger = CallLedger(run_id=step.run_id, asset=step.label)
        gateway = self._runtime()
        batches_possible = batch and isinstance(context, AssetExecutionContext) and gateway.batches.endpoint()
        batching = BatchScope.of(context) if batches_possible and self.state_path else None
        return ModelSession(gateway, ledger, step, compare_tiers, batching=batching)

    def provider_batches(self) -> ProviderBatches:
        """Submitted provider batches, for the sensor that polls them and the command that lists them."""
        return self._runtime().batches

    def open_session(self, run_id: str = "", asset: str = "") -> ModelSession:
        """A session outside a Dagster run (the CLI, evaluations, benchmarks, tests): its calls are
        recorded in its own ledger, labelled `run_id` and `asset` when given, which the caller
        reads afterwards; nothing is written to Dagster."""
        return ModelSession(self._runtime(), CallLedger(run_id=run_id, asset=asset))

    def _runtime(self) -> Gateway:
        """The gateway of these settings, built once (a copy with other settings builds its own)."""
        with self._lock:
            if self._gateway is None or self._gateway.config is not self:
                self._gateway = Gateway(self)
            return self._gateway
