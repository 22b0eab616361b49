"""The run-failure sensor: every failed run written down where a person looks, and
optionally posted to a webhook (a chat channel, an incident tool)."""

import json
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor
from pydantic import BaseModel


class RunFailure(BaseModel):
    run_id: str
    job_name: str
    failed_at: str
    message: str
    failed_steps: list[str]


def describe(context: RunFailureSensorContext) -> RunFailure:
    steps = [e.step_key for e in context.get_step_failure_events() if e.step_key]
    return RunFailure(
        run_id=context.dagster_run.run_id,
        job_name=context.dagster_run.job_name,
        failed_at=datetime.now(timezone.utc).isoformat(),
        message=context.failure_event.message or "",
        failed_steps=steps,
    )


def run_failure_recorder(log_path: str, webhook_url: str = ""):
    """Appends each failure to `log_path` (JSON lines) and POSTs it to `webhook_url` when set."""

    @run_failure_sensor(
        name="record_run_failures",
        default_status=DefaultSensorStatus.RUNNING,
        description="Writes every failed run to the failure log (and the webhook, when configured).",
    )
    def record_run_failures(context: RunFailureSensorContext) -> None:
        failure = describe(context)
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(failure.model_dump_json() + "\n")
        if webhook_url:
            request = urllib.request.Request(
                webhook_url,
                data=json.dumps(
                    {
                        "text": f"Run {failure.run_id} of {failure.job_name} failed: {failure.message}",
                        **failure.model_dump(),
                    }
                ).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                urllib.request.urlopen(request, timeout=10).close()
            except OSError as exc:  # the failure is already on disk; a dead webhook must not hide it
                context.log.warning(f"Webhook {webhook_url} refused the failure notice: {exc}")

    return record_run_failures
