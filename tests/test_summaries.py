"""The digest's tone and key figures come only from signals that held up against their evidence."""

import pytest

from assets.digest.signals import DocumentSignals, EvidenceSpan, KeyFigure
from assets.digest.summaries import SummarySentence, assemble, figure_label, render_digest

pytestmark = pytest.mark.unit

SPAN = EvidenceSpan(quote="Sales rose 12 percent.", start=0, end=22, chunk_id="d1-000")


def _sentence(chunk: str) -> SummarySentence:
    return SummarySentence(
        text=f"Claim resting on {chunk}.",
        origin="model",
        claim_ids=[f"c-{chunk}"],
        verdict="supported",
        score=0.95,
        evidence_chunk_ids=[chunk],
    )


def _summary(chunks: list[str], signals: dict[str, DocumentSignals]):
    return assemble(
        "Acme",
        [_sentence(c) for c in chunks],
        written=len(chunks),
        removed=0,
        excluded=0,
        signals_by_doc=signals,
        index_version="v1",
    )


def test_ungrounded_and_failed_signals_lend_no_tone_or_figures_to_the_digest():
    signals = {
        "d1": DocumentSignals(
            doc_id="d1", title="one", status="ungrounded", sentiment="positive", sentiment_evidence=SPAN
        ),
        "d2": DocumentSignals(doc_id="d2", title="two", status="failed", sentiment="positive"),
        "d3": DocumentSignals(
            doc_id="d3",
            title="three",
            status="valid",
            sentiment="negative",
            sentiment_evidence=SPAN,
            key_figures=[KeyFigure(label="sales growth", value="12 percent", evidence=SPAN)],
        ),
    }
    summary = _summary(["d1-000", "d2-000", "d3-000"], signals)
    assert summary.sentiment_mix == {"negative": 1}
    assert summary.key_figures == ["sales growth: 12 percent"]
    digest = render_digest([summary])
    assert "Tone of sources: negative 1" in digest and "positive" not in digest


def test_a_digest_whose_signals_are_all_ungrounded_reports_no_tone():
    signals = {
        "d1": DocumentSignals(
            doc_id="d1", title="one", status="ungrounded", sentiment="positive", sentiment_evidence=SPAN
        )
    }
    digest = render_digest([_summary(["d1-000"], signals)])
    assert "Tone of sources" not in digest


def test_generic_figure_labels_are_named_from_their_sentence():
    assert figure_label(KeyFigure(label="figure", value="12", evidence=SPAN)) == "Sales rose"
    quoted = EvidenceSpan(
        quote="Northwind raised 40 million euros in a Series C round.", start=0, end=10, chunk_id="d-0"
    )
    assert figure_label(KeyFigure(label="figure", value="40 million", evidence=quoted)) == "Northwind raised"
    assert figure_label(KeyFigure(label="revenue", value="40", evidence=quoted)) == "revenue"
