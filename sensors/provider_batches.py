"""The provider batch sensor: polls the batches that materializations left waiting, and launches
them again once their answers are in.

A batch that completed is ingested (its valid answers into the response cache, its cost at the
batch price) and its materialization launched again over the same partitions, with what the
first run selected downstream of it: that run reads the answers from the cache and asks live
only what is missing or invalid. A batch that expired, was cancelled or failed is ingested for
what it did answer, and then, as `batch_on_failure` says, either reported (an observation on
the waiting asset with the reason, and nothing launched: a person decides) or launched the same
way, its unanswered requests then asked live. The run key is the batch id, so a batch launches
at most one run.
"""

from __future__ import annotations

import openai
from dagster import (
    AssetKey,
    AssetObservation,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import PARTITION_NAME_TAG

from resources import ModelResource
from resources.gateway.batch_registry import ProviderBatch
from resources.gateway.provider_batches import BATCH_FALLBACK_TAG, BATCH_TAG


def follow_up_run(batch: ProviderBatch, live: bool = False) -> RunRequest:
    """The waiting materialization again, over the partitions it waited with; `live` marks a run
    that asks a failed batch's unanswered requests live."""
    tags = {k: v for k, v in batch.run_tags.items() if k != PARTITION_NAME_TAG}
    tags[BATCH_TAG] = batch.batch_id
    if live:
        tags[BATCH_FALLBACK_TAG] = "live"
    return RunRequest(
        run_key=batch.batch_id,
        asset_selection=[AssetKey.from_user_string(key) for key in batch.selection],
        partition_key=batch.run_tags.get(PARTITION_NAME_TAG),
        tags=tags,
    )


def failure_report(batch: ProviderBatch) -> list[AssetObservation]:
    """What the waiting asset shows of a batch that ended without its answers: one observation per partition."""
    metadata = {
        "batch_id": batch.batch_id,
        "status": f"provider batch {batch.status}",
        "reason": batch.reason or batch.status,
        "answered": batch.answered,
        "unanswered": batch.requests - batch.answered,
        "cost_usd": batch.cost_usd,
        "what_next": "its answered requests are in the response cache; materialize the asset again to ask the "
        "rest live (or set batch_on_failure to live)",
    }
    key = AssetKey.from_user_string(batch.asset)
    return [AssetObservation(asset_key=key, partition=p, metadata=metadata) for p in batch.partitions or [None]]


@sensor(
    name="provider_batch_sensor",
    asset_selection=AssetSelection.all(),
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Polls the provider batches that materializations wait for; launches each materialization again "
    "once its batch's answers are in the response cache, and reports batches that expired, were cancelled or "
    "failed (or asks their unanswered requests live, as batch_on_failure says).",
)
def provider_batch_sensor(context: SensorEvaluationContext, model: ModelResource) -> SensorResult | SkipReason:
    batches = model.provider_batches()
    if batches.registry() is None:
        return SkipReason("The gateway keeps no state (no state_path): there are no provider batches to poll")
    launches: list[RunRequest] = []
    reports: list[AssetObservation] = []
    waiting: list[str] = []
    for batch in batches.unhandled():
        try:
            batch = batch if batch.ended else batches.refresh(batch)
            if not batch.ended:
                waiting.append(f"{batch.batch_id} ({batch.status})")
                continue
            batch = batches.ingest(batch)
        except (openai.OpenAIError, KeyError) as exc:
            context.log.warning(f"Provider batch {batch.batch_id} of {batch.asset} not polled: {exc}")
            continue
        answers = (
            f"{batch.answered} of {batch.requests} answered validly, {batch.invalid} invalid, {batch.failed} failed, "
            f"{batch.unanswered} unanswered; ${batch.cost_usd} at the batch price"
        )
        if batch.status == "completed":
            launches.append(follow_up_run(batch))
            batches.settle(batch, "relaunched")
            context.log.info(f"Provider batch {batch.batch_id} of {batch.asset} completed: {answers}; launching it")
        elif model.batch_on_failure == "live":
            launches.append(follow_up_run(batch, live=True))
            batches.settle(batch, "relaunched_live")
            context.log.warning(
                f"Provider batch {batch.batch_id} of {batch.asset} {batch.reason}: {answers}; "
                "launching it to ask the rest live"
            )
        else:
            reports += failure_report(batch)
            batches.settle(batch, "reported")
            context.log.warning(
                f"Provider batch {batch.batch_id} of {batch.asset} {batch.reason}: {answers}; "
                "reported, nothing launched (batch_on_failure: report)"
            )
    if not launches and not reports:
        return SkipReason(
            f"Waiting for provider batches: {', '.join(waiting)}" if waiting else "No provider batch is waiting"
        )
    return SensorResult(run_requests=launches, asset_events=reports)
