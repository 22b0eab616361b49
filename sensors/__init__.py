"""Sensors, schedules and the jobs they launch: what starts runs."""

from sensors.jobs import digest_job, publish_job
from sensors.run_failures import run_failure_recorder
from sensors.schedules import digest_schedule

ALL_JOBS = [digest_job, publish_job]

__all__ = ["ALL_JOBS", "digest_job", "digest_schedule", "publish_job", "run_failure_recorder"]
