"""Where every endpoint's part in a request is written down: the session's ledger (the
materialization's figures), the trace table (a row a person can look up by trace id) and,
when a collector is configured, an OpenTelemetry span.

Failed and skipped calls are recorded too, so that an outage can be named afterwards. The
trace table and the exporter are opened on the first record, never when the resource is built.
"""

from __future__ import annotations

import threading
from typing import Any

from resources.gateway.config import GatewayConfig
from resources.gateway.ledger import CallLedger, CallRecord
from resources.gateway.traces import TraceStore
from resources.secrets import reveal


class CallRecorder:
    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._traces: TraceStore | None = None
        self._spans: Any = None

    def traces(self) -> TraceStore | None:
        with self._lock:
            if self._traces is None and self._config.trace_path:
                self._traces = TraceStore(reveal(self._config.trace_path), self._config.trace_redaction)
            return self._traces

    def spans(self):
        """The OpenTelemetry exporter, when an OTLP endpoint is configured."""
        with self._lock:
            if self._spans is None and self._config.otlp_endpoint:
                from resources.gateway.telemetry import SpanExporter  # OpenTelemetry loads only when used

                self._spans = SpanExporter(self._config.otlp_endpoint)
            return self._spans

    def record(self, ledger: CallLedger, record: CallRecord, messages: list[dict[str, Any]], response: str) -> None:
        ledger.add(record)
        traces = self.traces()
        if traces is not None:
            traces.add(record, messages, response, ledger.run_id, ledger.asset)
        spans = self.spans()
        if spans is not None:
            spans.export(record, ledger.run_id, ledger.asset)

    def trace_records(self, trace_ids: list[str]) -> list[dict[str, object]]:
        """The trace table rows of these calls (those the table still holds)."""
        store = self.traces()
        return store.get_many(trace_ids) if store else []
