"""The run-failure sensor writes a failed run down and posts it to a webhook."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context

from sensors.run_failures import run_failure_recorder
from tests.conftest import run_digest_job

pytestmark = pytest.mark.integration


def test_failed_run_is_logged_and_posted(settings, tmp_path):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        instance = DagsterInstance.ephemeral()
        result = run_digest_job(settings.model_copy(update={"llm_budget_tokens": 500}), instance)
        assert not result.success
        [failure_event] = [e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE]
        log = tmp_path / "failures.jsonl"
        sensor = run_failure_recorder(str(log), f"http://127.0.0.1:{server.server_address[1]}/hook")
        context = build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=failure_event,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ).for_run_failure()
        sensor(context)
    finally:
        server.shutdown()
    [logged] = [json.loads(line) for line in log.read_text().splitlines()]
    assert logged["run_id"] == result.run_id and logged["job_name"] == "digest_job"
    assert logged["failed_steps"] == ["signals"]
    [posted] = received
    assert posted["run_id"] == result.run_id and "failed" in posted["text"]
