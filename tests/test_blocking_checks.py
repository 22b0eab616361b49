"""A failing blocking check stops everything downstream of its asset, and the run says why."""

import json

import pytest

from ai_pipelines.run_report import RunReport
from tests.conftest import run_digest_job
from tests.fake_openai import extract_signals

pytestmark = pytest.mark.integration


def test_failing_signal_check_blocks_drafts_and_everything_after(settings, llm):
    def unusable_for_helios(messages):
        if "Helios Grid" in messages[0]["content"]:
            return "{not json"
        return extract_signals(messages)

    llm.scripts["ExtractedSignals"] = unusable_for_helios
    settings = settings.model_copy(update={"min_signal_validity": 0.9})
    result = run_digest_job(settings)
    report = RunReport.from_result(result, settings)

    assert not report.ok
    [blocked] = report.blocked_by
    assert (blocked.asset, blocked.check) == ("signals", "signal_validity")
    assert "documents have valid, grounded signals" in blocked.description
    assert {"drafts", "fact_checks", "summaries"} <= set(report.not_materialized)
    assert "signals" not in report.not_materialized
    assert "BLOCKED: check 'signal_validity' failed on asset 'signals'" in report.render()
    # Each unusable answer was re-asked twice before the document was marked failed.
    helios_calls = [c for c in llm.calls if "Helios Grid" in c["messages"][0]["content"]]
    assert len(helios_calls) == 3 * sum(1 for c in helios_calls if len(c["messages"]) == 1)
    assert llm.calls_for("DraftBrief") == 0


def test_passing_run_reports_ok(settings):
    report = RunReport.from_result(run_digest_job(settings), settings)
    assert report.ok and not report.blocked_by
    assert json.loads(report.model_dump_json())["success"] is True
