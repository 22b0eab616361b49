"""The reply rubric's judge proves itself on the desk's labelled replies before its passes let a
reply out: a reviewer that tells them apart gates the drafts; one that passes everything scores
0.5, critiques nothing, and every draft waits for a person."""

import pytest

from resources.support.reply_judge import REPLY_RUBRIC_EXAMPLES
from resources.verification.judge_calibration import read_examples
from tests.conftest import materialization_metadata
from tests.fake_openai import FakeOpenAI
from tests.smtp_server import SmtpTestServer
from tests.triage_helpers import by_ticket, run_triage_job, table, triage_settings

pytestmark = pytest.mark.integration

TICKETS = ["T001", "T002", "T003"]


def answered(settings) -> dict[str, dict]:
    """The drafts a branch wrote (not those routed to a person or left unanswered on purpose)."""
    drafts = by_ticket(table(settings, "reply_drafts"))
    return {t: d for t, d in drafts.items() if d["handling"] not in ("person", "no_reply") and d["reply"]}


def test_a_proven_reviewer_gates_the_replies(tmp_path, llm: FakeOpenAI, smtp_server: SmtpTestServer):
    settings = triage_settings(tmp_path, llm, smtp_server, tickets=TICKETS)
    result, _ = run_triage_job(settings)

    assert result.success
    metadata = materialization_metadata(result, "reply_drafts")
    examples = read_examples(REPLY_RUBRIC_EXAMPLES)
    assert metadata["judge_balanced_accuracy"] == 1.0 and metadata["judge_proven"] is True
    assert metadata["judge_calibration_examples"] == metadata["judge_calibration_requests"] == len(examples) >= 16
    drafts = answered(settings)
    assert drafts and all(d["rubric_verdict"] in ("passed", "failed") for d in drafts.values())
    assert all(d["status"] == "drafted" for d in drafts.values() if d["rubric_verdict"] == "passed")


def test_an_unproven_reviewer_critiques_nothing_and_every_reply_waits_for_a_person(
    tmp_path, llm: FakeOpenAI, smtp_server: SmtpTestServer
):
    llm.scripts["RubricCritique"] = lambda messages: {
        "answers_question": True,
        "cites_help_centre": True,
        "follows_policy": True,
        "polite": True,
        "feedback": "",
    }
    settings = triage_settings(tmp_path, llm, smtp_server, tickets=TICKETS)
    result, _ = run_triage_job(settings)

    assert result.success
    metadata = materialization_metadata(result, "reply_drafts")
    assert metadata["judge_balanced_accuracy"] == 0.5 and metadata["judge_proven"] is False
    drafts = answered(settings)
    assert drafts and all(
        d["rubric_verdict"] == "unjudged" and d["status"] == "escalated" and not d["rubric_passed"]
        for d in drafts.values()
    )
    assert all("rubric unjudged: the judge" in d["reason"] and "0.50" in d["reason"] for d in drafts.values())
    # Only the labelled replies were critiqued: no draft was judged or revised on this reviewer's word.
    assert llm.calls_for("RubricCritique") == len(read_examples(REPLY_RUBRIC_EXAMPLES))
    sent = by_ticket(table(settings, "sent_replies"))
    assert all(sent[t]["state"] != "sent" for t in drafts) and smtp_server.received == []
