"""Provider batches: a bulk materialization's requests sent through OpenAI's batch API
(/v1/files, /v1/batches) at the batch price, instead of one live call each.

A step that allows it (`LlmCall(batch=True)`, `batch: true` in YAML) offers its requests here
before asking them. When one tier has at least `batch_min_requests` requests the cache cannot
answer and the chain has a batch-capable endpoint, they are written as JSONL (each line the
body a live call would send, its custom id the live request's cache key), uploaded and
submitted, and the materialization stops with `BatchPending`: the asset records that it waits,
and nothing downstream runs. A sensor polls the batch; once it has ended, its answers are
validated as live answers are (JSON, then the request's JSON schema), the valid ones put in the
response cache under the live keys, every answered line accounted at the batch price, and the
materialization launched again. That follow-up run never submits: the cache answers what the
batch answered, and what is missing or invalid is asked live.

A request is submitted at most once: one held by a batch still running makes the run wait for
it; one held by a batch that has ended (its answer invalid or missing) is asked live.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import openai
from dagster import AssetExecutionContext, AssetSelection
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from pydantic import BaseModel

from resources.gateway.batch_registry import (
    SUBMITTING,
    BatchFigures,
    BatchLine,
    BatchRegistry,
    Handling,
    ProviderBatch,
)
from resources.gateway.call_recorder import CallRecorder
from resources.gateway.config import Endpoint, GatewayConfig, Tier
from resources.gateway.endpoint_state import EndpointStates
from resources.gateway.errors import INVALID_OUTPUT
from resources.gateway.ledger import CallLedger, CallRecord
from resources.gateway.request import ModelRequest
from resources.gateway.response_cache import CachedResponse, ResponseCache
from resources.gateway.spend_limits import SpendLimits
from resources.secrets import reveal

LOG = logging.getLogger("ai_pipelines.model")
CHAT_COMPLETIONS = "/v1/chat/completions"
# Run tags: the batch whose answers a follow-up run reads; the batch a run left its asset waiting
# for (what the UI shows on the run); a follow-up that asks a failed batch's requests live.
BATCH_TAG = "ai_pipelines/batch"
PENDING_BATCH_TAG = "ai_pipelines/pending_batch"
# The status an asset's observation gives while its materialization waits for a batch.
WAITING_STATUS = "waiting for provider batch"
BATCH_FALLBACK_TAG = "ai_pipelines/batch_fallback"
_PARTITION_TAGS = (PARTITION_NAME_TAG, ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG)
TOKEN_CHARS = 4  # characters per token, to estimate a prompt's tokens before it is sent


class BatchPending(Exception):
    """The step's requests are with the provider: its materialization waits for these batches."""

    def __init__(self, batches: Sequence[ProviderBatch], submitted: Sequence[str] = ()) -> None:
        self.batches = list(batches)
        self.submitted = list(submitted)  # the ids of those this run submitted
        ids = ", ".join(b.batch_id for b in self.batches)
        super().__init__(f"waiting for provider batch {ids} ({sum(b.requests for b in self.batches)} requests)")


class BatchScope(BaseModel):
    """What a session that may send batches knows of its run: whom a batch is for, and whether
    this run is itself the follow-up of one (which never submits)."""

    run_id: str
    asset: str
    partitions: list[str] = []
    run_tags: dict[str, str] = {}
    selection: list[str] = []
    follow_up: str = ""

    @classmethod
    def of(cls, context: AssetExecutionContext) -> BatchScope:
        run = context.run
        layer = context.job_def.asset_layer
        selected = set(run.asset_selection or layer.selected_asset_keys)
        below = AssetSelection.assets(context.asset_key).downstream().resolve(layer.asset_graph)
        return cls(
            run_id=context.run_id,
            asset=context.asset_key.to_user_string(),
            partitions=list(context.partition_keys)
            if context.has_partition_key_range or context.has_partition_key
            else [],
            run_tags={k: v for k, v in run.tags.items() if k in _PARTITION_TAGS},
            selection=sorted(k.to_user_string() for k in (below & selected) | {context.asset_key}),
            follow_up=run.tags.get(BATCH_TAG, ""),
        )


def answer_problem(content: str, schema: dict[str, Any]) -> str:
    """Why an answer's text is not a valid answer to a request with this JSON schema ("" when it is)."""
    try:
        value = json.loads(content)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    error = best_match(Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return ""
    where = ".".join(str(p) for p in error.absolute_path) or "answer"
    return f"{where}: {error.message}"[:300]


def line_failure(entry: dict[str, Any]) -> str:
    """Why the provider gave a line no answer, from its error-file entry."""
    error = entry.get("error") or {}
    if error:
        return f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
    response = entry.get("response") or {}
    detail = ((response.get("body") or {}).get("error") or {}).get("message") or ""
    return f"{response.get('status_code')}: {detail}".strip()


class ProviderBatches:
    """The client side of provider batches: submission, polling and ingestion of the answers."""

    def __init__(
        self,
        config: GatewayConfig,
        states: EndpointStates,
        recorder: CallRecorder,
        cache: Callable[[], ResponseCache | None],
        models: Callable[[Tier], list[str]],
        limits: SpendLimits,
    ) -> None:
        self._config = config
        self._limits = limits
        self._states = states
        self._recorder = recorder
        self._cache = cache
        self._models = models
        self._lock = threading.Lock()
        self._registry: BatchRegistry | None = None
        self._endpoints = {e.name: e for e in config.chain()}

    def registry(self) -> BatchRegistry | None:
        """The registry, in the state store; None when the gateway keeps no state."""
        with self._lock:
            if self._registry is None and self._config.state_path:
                self._registry = BatchRegistry(reveal(self._config.state_path))
            return self._registry

    def endpoint(self) -> Endpoint | None:
        """The first batch-capable endpoint of the chain, if any."""
        return next((e for e in self._endpoints.values() if e.batch), None)

    # --- the materialization's side --------------------------------------------------------------

    def offer(self, requests: Sequence[ModelRequest], scope: BatchScope, log: Any = LOG) -> None:
        """Returns when these requests are to be asked live; raises `BatchPending` when batches hold
        them: one submitted now, for each tier with at least `batch_min_requests` requests nothing
        answers yet, or one submitted earlier and still running."""
        endpoint, cache, registry = self.endpoint(), self._cache(), self.registry()
        if scope.follow_up or endpoint is None or cache is None or registry is None:
            return
        keyed: dict[str, ModelRequest] = {}
        for request in requests:
            if request.tools is None:
                keyed.setdefault(request.key(self._models(request.tier)), request)
        uncached = {k: r for k, r in keyed.items() if cache.valid(k, r.output) is None}
        if not uncached:
            return
        held = registry.holding(uncached)
        fresh = {k: r for k, r in uncached.items() if k not in held}
        submitted: list[ProviderBatch] = []
        for tier in sorted({r.tier for r in fresh.values()}):
            group = {k: r for k, r in fresh.items() if r.tier == tier}
            if len(group) < self._config.batch_min_requests:
                continue
            try:
                batch = self.submit(group, tier, scope, endpoint, registry)
            except openai.OpenAIError as exc:
                log.warning(
                    f"Batch of {len(group)} {tier} requests not submitted to {endpoint.name}; asking live: {exc}"
                )
                continue
            submitted += [batch] if batch is not None else []
        # Read again: a run that claimed some of these requests meanwhile holds them for this one too.
        waiting = {b.batch_id: b for b in registry.holding(uncached).values() if not b.handled}
        if waiting:
            raise BatchPending(list(waiting.values()), [b.batch_id for b in submitted])

    def submit(
        self,
        requests: dict[str, ModelRequest],
        tier: Tier,
        scope: BatchScope,
        endpoint: Endpoint,
        registry: BatchRegistry,
    ) -> ProviderBatch | None:
        """One batch of `requests` (by cache key), claimed, uploaded, created and registered; None
        when runs that claimed some of them first left fewer than a batch's worth.

        The requests are claimed in the registry before anything is uploaded, in a transaction
        every process runs alone, so two runs that reach the same requests at once send them in
        one batch, not two; the claim takes the provider's batch id once it has one, and is
        given up when the submission fails."""
        prompt_tokens = sum(r.input_chars // TOKEN_CHARS for r in requests.values())
        completion_tokens = sum(r.max_tokens for r in requests.values())
        self._limits.admit(endpoint, tier, prompt_tokens, completion_tokens)  # a batch is sent, too
        model = endpoint.model_for(tier)
        estimate = self._config.cost(tier, prompt_tokens, completion_tokens)
        claim = ProviderBatch(
            batch_id=f"claim-{uuid.uuid4().hex}",
            endpoint=endpoint.name,
            model=model,
            tier=tier,
            asset=scope.asset,
            origin_run_id=scope.run_id,
            partitions=scope.partitions,
            run_tags=scope.run_tags,
            selection=scope.selection,
            requests=len(requests),
            expected_cost_usd=round(estimate * endpoint.batch_price_ratio, 6),
            status=SUBMITTING,
        )
        claimed = registry.claim(
            claim,
            [
                BatchLine(
                    batch_id=claim.batch_id,
                    custom_id=key,
                    tier=tier,
                    partition=request.partition,
                    body=request.body(model),
                    output_schema=request.parameters()["response_format"]["json_schema"]["schema"],
                )
                for key, request in requests.items()
            ],
        )
        if len(claimed) < self._config.batch_min_requests:
            registry.forget(claim.batch_id)
            return None
        if len(claimed) < len(requests):  # the estimate covers what this batch sends
            share = len(claimed) / len(requests)
            claim.requests, claim.expected_cost_usd = len(claimed), round(claim.expected_cost_usd * share, 6)
        data = "".join(
            json.dumps({"custom_id": line.custom_id, "method": "POST", "url": CHAT_COMPLETIONS, "body": line.body})
            + "\n"
            for line in claimed
        ).encode()
        try:
            client = self._states.client(endpoint)
            upload = client.files.create(file=(f"{scope.asset.replace('/', '_')}.jsonl", data), purpose="batch")
            created = client.batches.create(
                input_file_id=upload.id,
                endpoint=CHAT_COMPLETIONS,
                completion_window=self._config.batch_completion_window,  # type: ignore[arg-type]
                metadata={"asset": scope.asset[:512], "run_id": scope.run_id},
            )
        except BaseException:
            registry.forget(claim.batch_id)
            raise
        batch = claim.model_copy(update={"batch_id": created.id, "status": created.status})
        registry.rename(claim.batch_id, batch)
        return batch

    def figures(self, batch_id: str, partition: str | None = None) -> BatchFigures:
        registry = self.registry()
        return registry.figures(batch_id, partition) if registry else BatchFigures()

    # --- the sensor's side -----------------------------------------------------------------------

    def unhandled(self) -> list[ProviderBatch]:
        """Batches the sensor has not settled: still with the provider, or ended and not yet acted on."""
        registry = self.registry()
        return registry.batches(unhandled_only=True, limit=1000) if registry else []

    def refresh(self, batch: ProviderBatch) -> ProviderBatch:
        """The batch with its status as the provider tells it now (and why, when it ended badly)."""
        remote = self._client(batch).batches.retrieve(batch.batch_id)
        batch.status = remote.status
        batch.output_file_id = remote.output_file_id or ""
        batch.error_file_id = remote.error_file_id or ""
        if remote.status == "failed":
            errors = remote.errors.data if remote.errors and remote.errors.data else []
            batch.reason = "failed: " + ("; ".join(f"{e.code}: {e.message}" for e in errors) or "no reason given")
        elif remote.status == "expired":
            batch.reason = f"expired: not finished within its {remote.completion_window} completion window"
        elif remote.status == "cancelled":
            batch.reason = "cancelled at the provider before it finished"
        self._save(batch)
        return batch

    def ingest(self, batch: ProviderBatch) -> ProviderBatch:
        """An ended batch's answers: each validated as a live answer is, the valid ones put in the
        response cache under the live request's key, every answered line accounted at the batch
        price (trace rows under the run `batch:<id>`), and each line's outcome kept."""
        client = self._client(batch)
        entries: list[dict[str, Any]] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                text = client.files.content(file_id).text
                entries += [json.loads(line) for line in text.splitlines() if line.strip()]
        registry, cache = self.registry(), self._cache()
        assert registry is not None and cache is not None, "a batch is only submitted with a state store and a cache"
        lines = {line.custom_id: line for line in registry.lines(batch.batch_id)}
        ratio = self._endpoints[batch.endpoint].batch_price_ratio if batch.endpoint in self._endpoints else 1.0
        ledger = CallLedger(run_id=f"batch:{batch.batch_id}", asset=batch.asset)
        answered_tokens = 0
        for entry in entries:
            line = lines.get(str(entry.get("custom_id")))
            if line is None:
                continue
            response = entry.get("response") or {}
            if entry.get("error") or response.get("status_code") != 200:
                line.outcome, line.reason = "failed", line_failure(entry)[:500]
                continue
            body = response.get("body") or {}
            choices = body.get("choices") or [{}]
            content = (choices[0].get("message") or {}).get("content") or ""
            usage = body.get("usage") or {}
            prompt_tokens, completion_tokens = (
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
            problem = answer_problem(content, line.output_schema)
            line.cost_usd = self._config.cost(line.tier, prompt_tokens, completion_tokens) * ratio
            answered_tokens += prompt_tokens + completion_tokens
            record = CallRecord(
                request_id=line.custom_id,
                partition=line.partition,
                tier=line.tier,
                model=batch.model,
                endpoint=batch.endpoint,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=line.cost_usd,
                error=f"invalid output: {problem}" if problem else "",
                error_kind=INVALID_OUTPUT if problem else "",
            )
            self._recorder.record(ledger, record, line.body.get("messages", []), content)
            if problem:
                line.outcome, line.reason = "invalid", problem
                continue
            cache.put(
                line.custom_id,
                CachedResponse(
                    content=content,
                    model=batch.model,
                    endpoint=batch.endpoint,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    batch_id=batch.batch_id,
                ),
            )
            line.outcome, line.reason = "answered", ""
        for line in lines.values():
            if line.outcome == "waiting":
                line.outcome, line.reason = "unanswered", f"the batch {batch.status} before answering it"
        outcomes = [line.outcome for line in lines.values()]
        batch.answered, batch.invalid = outcomes.count("answered"), outcomes.count("invalid")
        batch.failed, batch.unanswered = outcomes.count("failed"), outcomes.count("unanswered")
        batch.cost_usd = round(sum(line.cost_usd for line in lines.values()), 6)
        self._limits.charge(batch.endpoint, batch.tier, answered_tokens, batch.cost_usd, ledger.run_id)
        registry.save_lines(list(lines.values()))
        self._save(batch)
        return batch

    def settle(self, batch: ProviderBatch, handled: Handling) -> None:
        """Records what the sensor did about an ended batch, so it is not acted on twice."""
        batch.handled = handled
        self._save(batch)

    def cancel(self, batch: ProviderBatch) -> ProviderBatch:
        """Asks the provider to stop the batch; its answered lines still arrive when it ends."""
        remote = self._client(batch).batches.cancel(batch.batch_id)
        batch.status = remote.status
        self._save(batch)
        return batch

    def _client(self, batch: ProviderBatch) -> openai.OpenAI:
        endpoint = self._endpoints.get(batch.endpoint)
        if endpoint is None:
            raise KeyError(f"batch {batch.batch_id} was sent to {batch.endpoint!r}, which is no endpoint of the chain")
        return self._states.client(endpoint)

    def _save(self, batch: ProviderBatch) -> None:
        registry = self.registry()
        assert registry is not None
        registry.save(batch)
