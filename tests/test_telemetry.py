"""Model calls exported as OpenTelemetry spans to a real OTLP/gRPC receiver on 127.0.0.1."""

from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from pydantic import BaseModel

from resources import ModelResource

pytestmark = pytest.mark.integration


class ClaimRewrite(BaseModel):
    claim: str


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = []

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, f"http://127.0.0.1:{port}"
    server.stop(grace=None)


def test_each_model_call_becomes_a_span(llm, collector):
    receiver, endpoint = collector
    model = ModelResource(base_url=llm.base_url, fast_model="fake-fast", otlp_endpoint=endpoint)
    session = model.open_session(run_id="run-1", asset="drafts")
    session.structured([{"role": "user", "content": "Evidence: Acme hired 12 people."}], ClaimRewrite)
    session.flush_telemetry()
    [span] = receiver.spans
    attributes = {a.key: a.value for a in span.attributes}
    assert span.name == "chat fake-fast"
    assert attributes["gen_ai.request.model"].string_value == "fake-fast"
    assert attributes["gen_ai.usage.input_tokens"].int_value > 0
    assert attributes["dagster.asset_key"].string_value == "drafts"
    assert attributes["ai_pipelines.trace_id"].string_value == session.ledger.records[0].trace_id
