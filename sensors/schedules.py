"""Schedules: the recurring digest."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from sensors.jobs import digest_refresh_job


def digest_schedule(cron: str, timezone: str) -> ScheduleDefinition:
    """Off until a person turns it on: an unattended schedule spends model budget."""
    return ScheduleDefinition(
        name="daily_digest",
        job=digest_refresh_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description="Rebuild the digest from the ingested documents on a schedule (AI_PIPELINES_DIGEST_CRON, AI_PIPELINES_TIMEZONE).",
    )
