"""A line per stage of a run, for output that is not a terminal (a pipe, a log file, CI).

The terminal's progress bar redraws one line in place, which a log file turns into a
smear of carriage returns, and Dagster's own console log is either silent (WARNING) or a
line per event. A person following a run from its log wants to know which stage ended,
what it produced, what its checks said and how long it took: one line each, written as
the stage ends. The instance calls `StageLines` with every event of the run
(`DagsterInstance.add_event_listener`), in the process that executes it.
"""

from __future__ import annotations

import threading
from typing import TextIO

from dagster import AssetCheckSeverity, DagsterEventType
from dagster._core.events.log import EventLogEntry
from pydantic import BaseModel


class StageCounts(BaseModel):
    """What one stage (a step of the run) did, counted from its events."""

    started: float = 0.0
    materialized: int = 0
    documents: int = 0  # what a batch's materialization says it holds: a batch is many documents
    model_requests: int = 0
    checks_passed: int = 0
    checks_failed: int = 0
    checks_warned: int = 0

    def describe(self) -> str:
        checks = self.checks_passed + self.checks_failed + self.checks_warned
        parts = [f"{self.materialized} materialized"] if self.materialized or not checks else []
        if self.documents:
            parts.append(f"{self.documents} documents")
        if self.model_requests:
            parts.append(f"{self.model_requests} model requests")
        if checks:
            verdicts = [f"{self.checks_passed} passed"]
            verdicts += [f"{self.checks_failed} FAILED"] if self.checks_failed else []
            verdicts += [f"{self.checks_warned} warned"] if self.checks_warned else []
            parts.append(f"checks {', '.join(verdicts)}")
        return ", ".join(parts)


class StageLines:
    """Writes `stage N  <step>: <counts> (<seconds> s)` when each step of the run ends."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._stages: dict[str, StageCounts] = {}
        self._ended = 0
        self._lock = threading.Lock()

    def __call__(self, entry: EventLogEntry) -> None:
        event = entry.dagster_event
        if event is None or not event.step_key:
            return
        with self._lock:
            stage = self._stages.setdefault(event.step_key, StageCounts(started=entry.timestamp))
            kind = event.event_type
            if kind == DagsterEventType.STEP_START:
                stage.started = entry.timestamp
            elif kind == DagsterEventType.ASSET_MATERIALIZATION:
                stage.materialized += 1
                metadata = event.event_specific_data.materialization.metadata
                stage.documents += int(getattr(metadata.get("documents"), "value", 0) or 0)
                stage.model_requests += int(getattr(metadata.get("model_requests"), "value", 0) or 0)
            elif kind == DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.event_specific_data
                if evaluation.passed:
                    stage.checks_passed += 1
                elif evaluation.severity == AssetCheckSeverity.ERROR:
                    stage.checks_failed += 1
                else:
                    stage.checks_warned += 1
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                self._ended += 1
                outcome = stage.describe() if kind == DagsterEventType.STEP_SUCCESS else f"FAILED; {stage.describe()}"
                seconds = max(0.0, entry.timestamp - stage.started)
                self.stream.write(f"stage {self._ended:>2}  {event.step_key}: {outcome} ({seconds:.0f} s)\n")
                self.stream.flush()
            elif kind == DagsterEventType.STEP_SKIPPED:
                self._ended += 1
                self.stream.write(f"stage {self._ended:>2}  {event.step_key}: skipped (an upstream check blocked it)\n")
                self.stream.flush()
