"""Sensors, schedules and the jobs they launch: what starts runs."""

from sensors.automation import index_automation
from sensors.inbox import inbox_sensor
from sensors.jobs import (
    digest_job,
    digest_refresh_job,
    document_job,
    index_job,
    publish_job,
    reply_approval_job,
    triage_job,
)
from sensors.provider_batches import provider_batch_sensor
from sensors.run_failures import run_failure_recorder
from sensors.schedules import digest_schedule
from sensors.ticket_inbox import ticket_inbox_sensor

ALL_JOBS = [digest_job, digest_refresh_job, document_job, index_job, publish_job, triage_job, reply_approval_job]

__all__ = [
    "ALL_JOBS",
    "digest_job",
    "digest_refresh_job",
    "digest_schedule",
    "document_job",
    "inbox_sensor",
    "index_automation",
    "index_job",
    "provider_batch_sensor",
    "publish_job",
    "reply_approval_job",
    "ticket_inbox_sensor",
    "triage_job",
    "run_failure_recorder",
]
