"""Sensors, schedules and the jobs they launch: what starts runs."""

from sensors.automation import index_automation
from sensors.inbox import inbox_sensor
from sensors.jobs import digest_job, digest_refresh_job, document_job, index_job, publish_job
from sensors.run_failures import run_failure_recorder
from sensors.schedules import digest_schedule

ALL_JOBS = [digest_job, digest_refresh_job, document_job, index_job, publish_job]

__all__ = [
    "ALL_JOBS",
    "digest_job",
    "digest_refresh_job",
    "digest_schedule",
    "document_job",
    "inbox_sensor",
    "index_automation",
    "index_job",
    "publish_job",
    "run_failure_recorder",
]
