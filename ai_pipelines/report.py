"""What a finished run tells the person who started it: where each output lives, and
which blocking check stopped which asset, and why."""

from __future__ import annotations

from dagster import AssetCheckSeverity, ExecuteInProcessResult
from pydantic import BaseModel

from ai_pipelines.settings import Settings


class OutputLocation(BaseModel):
    asset: str
    location: str
    partitions: int = 0  # documents partitions written by the run; 0 for unpartitioned assets


class CheckOutcome(BaseModel):
    asset: str
    check: str
    passed: bool
    blocking: bool
    description: str


class RunReport(BaseModel):
    run_id: str
    success: bool
    outputs: list[OutputLocation]
    checks: list[CheckOutcome]
    not_materialized: list[str]
    failed_steps: list[str]

    @property
    def blocked_by(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.blocking and not c.passed]

    @property
    def ok(self) -> bool:
        return self.success and not self.blocked_by and not self.not_materialized

    @classmethod
    def from_result(cls, result: ExecuteInProcessResult, settings: Settings) -> "RunReport":
        outputs: dict[str, OutputLocation] = {}
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
            outputs[asset] = OutputLocation(asset=asset, location=location, partitions=int(bool(materialization.partition)))
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
        return cls(
            run_id=result.run_id,
            success=result.success,
            outputs=list(outputs.values()),
            checks=checks,
            not_materialized=sorted(planned - materialized),
            failed_steps=failed,
        )

    def render(self) -> str:
        lines = [f"Run {self.run_id}: {'succeeded' if self.ok else 'FAILED'}", "", "Outputs:"]
        width = max((len(o.asset) for o in self.outputs), default=0)
        lines += [
            f"  {o.asset.ljust(width)}  {o.location}" + (f" ({o.partitions} partitions)" if o.partitions else "")
            for o in self.outputs
        ] or ["  (none)"]
        lines += ["", "Checks:"]
        lines += [
            f"  [{'pass' if c.passed else 'FAIL'}] {c.asset}:{c.check}  {c.description}" for c in self.checks
        ] or ["  (none)"]
        for check in self.blocked_by:
            lines.append(
                f"\nBLOCKED: check '{check.check}' failed on asset '{check.asset}': {check.description}"
            )
        if self.not_materialized:
            lines.append(f"Not materialized: {', '.join(self.not_materialized)}")
        if self.failed_steps:
            lines.append(f"Failed steps: {', '.join(self.failed_steps)} (see the run's logs in the Dagster UI)")
        return "\n".join(lines)
