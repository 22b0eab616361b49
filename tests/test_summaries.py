"""The digest's tone and key figures come only from signals that held up against their evidence."""

from assets.fact_checks import FactCheck
from assets.signals import DocumentSignals, EvidenceSpan, KeyFigure
from assets.summaries import render_digest, summarize

SPAN = EvidenceSpan(quote="Sales rose 12 percent.", start=0, end=22, chunk_id="d1-000")


def _check(chunk: str) -> FactCheck:
    return FactCheck(
        claim_id=f"c-{chunk}", draft_id="acme", topic="Acme", claim=f"Claim resting on {chunk}.", verdict="supported",
        score=0.95, evidence_chunk_ids=[chunk], evidence_sentence="", contested=False, conflicting_chunk_ids=[],
        conflict="", index_version="v1",
    )


def test_ungrounded_and_failed_signals_lend_no_tone_or_figures_to_the_digest():
    signals = {
        "d1": DocumentSignals(doc_id="d1", title="one", status="ungrounded", sentiment="positive", sentiment_evidence=SPAN),
        "d2": DocumentSignals(doc_id="d2", title="two", status="failed", sentiment="positive"),
        "d3": DocumentSignals(
            doc_id="d3", title="three", status="valid", sentiment="negative", sentiment_evidence=SPAN,
            key_figures=[KeyFigure(label="sales growth", value="12 percent", evidence=SPAN)],
        ),
    }
    summary = summarize("Acme", [_check("d1-000"), _check("d2-000"), _check("d3-000")], signals)
    assert summary.sentiment_mix == {"negative": 1}
    assert summary.key_figures == ["sales growth: 12 percent"]
    digest = render_digest([summary])
    assert "Tone of sources: negative 1" in digest and "positive" not in digest


def test_a_digest_whose_signals_are_all_ungrounded_reports_no_tone():
    signals = {"d1": DocumentSignals(doc_id="d1", title="one", status="ungrounded", sentiment="positive", sentiment_evidence=SPAN)}
    digest = render_digest([summarize("Acme", [_check("d1-000")], signals)])
    assert "Tone of sources" not in digest
