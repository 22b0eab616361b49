"""What a finished run tells the person who started it: where each output lives,
which blocking check stopped which asset and why, and whether the model endpoints
held up. A run that completed on fallbacks because no endpoint answered is not a
success to keep quiet about: the outage is named (endpoint, error, count) and the
run counts as degraded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import AssetCheckSeverity, ExecuteInProcessResult
from pydantic import BaseModel

from ai_pipelines.settings import Settings
from resources.gateway.provider_batches import WAITING_STATUS
from resources.gateway.traces import EndpointFailures, TraceStore


class OutputLocation(BaseModel):
    asset: str
    location: str
    partitions: int = 0  # documents partitions written by the run; 0 for unpartitioned assets


class PendingBatch(BaseModel):
    """An asset the run left waiting for a provider batch: not a failure, work in flight."""

    asset: str
    batch_id: str
    requests: int
    expected_cost_usd: float


class CheckOutcome(BaseModel):
    asset: str
    check: str
    passed: bool
    blocking: bool
    description: str


_USAGE_KEYS = {
    "model_requests": "requests",
    "model_failed_requests": "failed_requests",
    "model_outage_requests": "outage_requests",
    "model_retries": "retries",
    "model_reasks": "reasks",
    "fallbacks": "fallbacks",
    "cache_hits": "cache_hits",
}


# What a step paid to measure its judge or its routing tiers before deciding anything: one
# figure for the whole step, repeated on each partition's materialization of a ranged run, so
# it is counted once per asset rather than summed over the partitions.
MEASURING_KEYS = {
    "judge_calibration_requests": "requests",
    "judge_calibration_cache_hits": "cache_hits",
    "route_measuring_requests": "requests",
    "route_measuring_cache_hits": "cache_hits",
}


class ModelUsage(BaseModel):
    """The run's model requests, added up over every materialization (partitions included)
    and every check evaluation that called a model."""

    requests: int = 0
    failed_requests: int = 0
    outage_requests: int = 0
    retries: int = 0
    reasks: int = 0
    fallbacks: int = 0
    cache_hits: int = 0
    failures: list[EndpointFailures] = []
    # Requests a refusal sent on: to a larger context window, to the content policy's endpoint,
    # or cut to fit; from the trace table, like `failures`.
    fallbacks_by_reason: dict[str, int] = {}

    @property
    def outage(self) -> bool:
        """Requests failed because no endpoint answered (not merely invalid answers)."""
        return self.outage_requests > 0

    def add(self, metadata: Mapping[str, Any], keys: Mapping[str, str] = _USAGE_KEYS) -> None:
        """Adds the usage figures a materialization or a check evaluation recorded (`keys`:
        metadata key to field)."""
        for key, field in keys.items():
            value = metadata.get(key)
            if value is not None and isinstance(value.value, (int, float)):
                setattr(self, field, getattr(self, field) + int(value.value))

    def add_measuring(self, metadata_by_asset: Mapping[str, Mapping[str, Any]]) -> None:
        """Adds each asset's measuring figures (MEASURING_KEYS) once."""
        for metadata in metadata_by_asset.values():
            self.add(metadata, MEASURING_KEYS)

    @classmethod
    def of_run(cls, result: Any) -> "ModelUsage":
        """Every model request of a run: each materialization's and check evaluation's own
        calls, and each asset's measuring calls once."""
        usage = cls()
        measuring: dict[str, Mapping[str, Any]] = {}
        # Checks that ask a model (a rubric judged by the strong tier) record their calls too.
        for evaluation in result.get_asset_check_evaluations():
            usage.add(evaluation.metadata)
        for event in result.get_asset_materialization_events():
            usage.add(event.materialization.metadata)
            measuring[event.materialization.asset_key.to_user_string()] = event.materialization.metadata
        usage.add_measuring(measuring)
        return usage

    def describe_fallbacks(self) -> str:
        return ", ".join(f"{reason} x{count}" for reason, count in sorted(self.fallbacks_by_reason.items()))

    def describe_failures(self) -> str:
        return ", ".join(
            f"{f.endpoint} {f.kind} x{f.count}" + (f" ({f.attempts} attempts)" if f.attempts > f.count else "")
            for f in self.failures
        )


class RunReport(BaseModel):
    run_id: str
    success: bool
    outputs: list[OutputLocation]
    checks: list[CheckOutcome]
    not_materialized: list[str]
    failed_steps: list[str]
    model_usage: ModelUsage = ModelUsage()
    pending_batches: list[PendingBatch] = []

    @property
    def blocked_by(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.blocking and not c.passed]

    @property
    def warnings(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.blocking and not c.passed]

    @property
    def waiting(self) -> bool:
        """Assets wait for provider batches, and nothing else went wrong: what was not
        materialized is theirs and what is downstream of them (the batch sensor launches it)."""
        return bool(self.pending_batches) and self.success and not self.blocked_by and not self.model_usage.outage

    @property
    def ok(self) -> bool:
        return self.waiting or (
            self.success and not self.blocked_by and not self.not_materialized and not self.model_usage.outage
        )

    @classmethod
    def from_result(cls, result: ExecuteInProcessResult, settings: Settings) -> "RunReport":
        outputs: dict[str, OutputLocation] = {}
        usage = ModelUsage.of_run(result)
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            asset = materialization.asset_key.to_user_string()
            if asset in outputs:  # one event per partition; the location is the same table
                outputs[asset].partitions += 1
                continue
            metadata = materialization.metadata
            places = []
            if "dagster/table_name" in metadata:
                table = str(metadata["dagster/table_name"].value).rsplit(".", 2)
                places.append(f"table {'.'.join(table[-2:])} in {settings.warehouse_path.resolve()}")
            if "location" in metadata:
                places.append(str(metadata["location"].value))
            location = "; ".join(places) or "Dagster IO manager storage"
            outputs[asset] = OutputLocation(
                asset=asset, location=location, partitions=int(bool(materialization.partition))
            )
        checks = [
            CheckOutcome(
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                passed=evaluation.passed,
                blocking=evaluation.blocking and evaluation.severity == AssetCheckSeverity.ERROR,
                description=evaluation.description or "",
            )
            for evaluation in result.get_asset_check_evaluations()
        ]
        planned = {key.to_user_string() for key in result.job_def.asset_layer.executable_asset_keys}
        materialized = set(outputs)
        failed = [e.step_key for e in result.get_step_failure_events() if e.step_key]
        pending = {
            (event.asset_key.to_user_string(), str(observation.metadata["batch_id"].value)): observation.metadata
            for event in result.all_events
            if event.event_type_value == "ASSET_OBSERVATION"
            and (observation := event.event_specific_data.asset_observation) is not None  # type: ignore[union-attr]
            and "status" in observation.metadata
            and observation.metadata["status"].value == WAITING_STATUS
        }
        traces = TraceStore(settings.trace_location)
        usage.failures = traces.failures_by_endpoint(result.run_id)
        usage.fallbacks_by_reason = traces.fallbacks_by_reason(result.run_id)
        return cls(
            run_id=result.run_id,
            success=result.success,
            outputs=list(outputs.values()),
            checks=checks,
            not_materialized=sorted(planned - materialized),
            failed_steps=failed,
            model_usage=usage,
            pending_batches=[
                PendingBatch(
                    asset=asset,
                    batch_id=batch_id,
                    requests=int(metadata["requests"].value),  # type: ignore[arg-type]
                    expected_cost_usd=float(metadata["expected_cost_usd"].value),  # type: ignore[arg-type]
                )
                for (asset, batch_id), metadata in pending.items()
            ],
        )

    def render(self) -> str:
        state = (
            "waiting for a provider batch"
            if self.waiting
            else "succeeded"
            if self.ok
            else "DEGRADED: model outage"
            if self.success and self.model_usage.outage and not self.blocked_by
            else "FAILED"
        )
        lines = [f"Run {self.run_id}: {state}", ""]
        usage = self.model_usage
        if usage.outage:
            lines += [
                f"MODEL OUTAGE: {usage.outage_requests} of {usage.requests} model requests got no answer from any "
                f"endpoint ({usage.describe_failures()}). Outputs that depend on them fell back or were not produced; "
                "check the endpoints (AI_PIPELINES_LLM_BASE_URL, AI_PIPELINES_LLM_FALLBACKS) and run again.",
                "",
            ]
        lines += ["Outputs:"]
        width = max((len(o.asset) for o in self.outputs), default=0)
        lines += [
            f"  {o.asset.ljust(width)}  {o.location}" + (f" ({o.partitions} partitions)" if o.partitions else "")
            for o in self.outputs
        ] or ["  (none)"]
        lines += ["", "Checks:"]
        lines += [
            f"  [{'pass' if c.passed else 'FAIL' if c.blocking else 'warn'}] {c.asset}:{c.check}  {c.description}"
            for c in self.checks
        ] or ["  (none)"]
        if usage.requests:
            lines += [
                "",
                f"Model requests: {usage.requests} ({usage.cache_hits} from cache), {usage.failed_requests} failed "
                f"({usage.outage_requests} with no endpoint answering); {usage.retries} retries, {usage.reasks} re-asks, "
                f"{usage.fallbacks} answered by a fallback endpoint",
            ]
            if usage.fallbacks_by_reason:
                lines.append(f"Fallbacks by reason: {usage.describe_fallbacks()}")
            if usage.failures and not usage.outage:
                lines.append(f"Endpoint failures: {usage.describe_failures()}")
        for check in self.blocked_by:
            lines.append(f"\nBLOCKED: check '{check.check}' failed on asset '{check.asset}': {check.description}")
        for batch in self.pending_batches:
            lines.append(
                f"\nWAITING: {batch.asset} waits for provider batch {batch.batch_id} ({batch.requests} requests, "
                f"at most ${batch.expected_cost_usd:.4f}); provider_batch_sensor launches it, and what this run "
                "selected downstream of it, once the answers are in (sensors run under `make dev` or `make prod`; "
                "`ai-pipelines batches` shows how far along it is)"
            )
        if self.not_materialized:
            lines.append(f"Not materialized: {', '.join(self.not_materialized)}")
        if self.failed_steps:
            lines.append(f"Failed steps: {', '.join(self.failed_steps)} (see the run's logs in the Dagster UI)")
        return "\n".join(lines)
