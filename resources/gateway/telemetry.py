"""OpenTelemetry export of model calls, so Langfuse/Arize-style tools can read them.

Off unless an OTLP endpoint is configured. Each gateway request becomes one span
named after the GenAI semantic conventions (`chat <model>`), carrying the model,
endpoint, token counts, cost, cache hit, attempts and error, timed as it happened.
"""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from resources.gateway.ledger import CallRecord


class SpanExporter:
    def __init__(self, endpoint: str, service_name: str = "ai-pipelines"):
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        self._tracer = self._provider.get_tracer("ai_pipelines.model_gateway")

    def export(self, record: CallRecord, run_id: str, asset: str) -> None:
        end = time.time_ns()
        span = self._tracer.start_span(
            f"chat {record.model}",
            start_time=end - int(record.latency_s * 1e9),
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": record.model,
                "gen_ai.usage.input_tokens": record.prompt_tokens,
                "gen_ai.usage.output_tokens": record.completion_tokens,
                "ai_pipelines.trace_id": record.trace_id,
                "ai_pipelines.endpoint": record.endpoint,
                "ai_pipelines.tier": record.tier,
                "ai_pipelines.cost_usd": record.cost_usd,
                "ai_pipelines.cache_hit": record.cache_hit,
                "ai_pipelines.fallback": record.fallback,
                "ai_pipelines.attempt": record.attempt,
                "ai_pipelines.reask": record.reask,
                "dagster.run_id": run_id,
                "dagster.asset_key": asset,
            },
        )
        if record.error:
            span.set_status(Status(StatusCode.ERROR, record.error[:500]))
        span.end(end_time=end)

    def flush(self) -> None:
        self._provider.force_flush()
