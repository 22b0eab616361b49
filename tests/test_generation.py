"""Generation: model-written drafts, the refinement loop and model-written summaries.

The loop mechanics are tested with a scripted verifier (fast, independent of the
verifier's internals); tests/test_generation_verified.py runs the same path with the
real verifier against a small index.
"""

from collections import Counter
from typing import Sequence

import pytest

from ai_pipelines.definitions import build_resources
from assets.digest.draft_revisions import outcomes, refine
from assets.digest.drafts import (
    EvidenceItem,
    brief_schema,
    citing_within,
    claims_from_brief,
    draft_messages,
    without_repeats,
)
from assets.digest.fact_checks import fact_check_rows
from assets.digest.summaries import render_digest, write_summaries
from resources.documents.text import normalize
from resources.verification.claim_verification import Claim, ClaimVerdict
from resources.verification.sentence_checks import check_sentences

# Tiers, marked per test: the extractive fallback is unit; the rest calls the fake model server, integration.

EVIDENCE = [
    EvidenceItem(
        number=1,
        chunk_id="a1-000",
        doc_id="a1",
        title="Acme funding",
        published="2026-03-03",
        sentence="Acme Robotics raised 40 million euros in a Series C round led by Nordic Capital.",
    ),
    EvidenceItem(
        number=2,
        chunk_id="a2-000",
        doc_id="a2",
        title="Acme results",
        published="2026-07-20",
        sentence="Acme Robotics reported revenue of 120 million euros for the first half of 2026.",
    ),
    EvidenceItem(
        number=3,
        chunk_id="a3-000",
        doc_id="a3",
        title="Acme factory",
        published="2026-05-02",
        sentence="Acme Robotics will open its Tampere factory in September 2026.",
    ),
]
TRUE = [
    "Nordic Capital led a 40 million euro Series C for Acme Robotics.",
    "First-half 2026 sales at Acme Robotics came to 120 million euros.",
    "The Tampere plant of Acme Robotics is due to start in September 2026.",
]
FALSE = "Acme Robotics raised 60 million euros in its Series C."


class ScriptedVerifier:
    """Supports exactly the sentences it is told are true (and the evidence sentences); nothing else."""

    def __init__(self, true: Sequence[str]):
        self.true = {normalize(t) for t in list(true) + [e.sentence for e in EVIDENCE]}
        self.seen: list[str] = []

    def verify(self, claims: Sequence[Claim]) -> list[ClaimVerdict]:
        self.seen += [c.text for c in claims]
        return [
            ClaimVerdict(
                id=c.id,
                verdict="supported" if normalize(c.text) in self.true else "refuted",
                score=0.9,
                evidence=c.cited_chunk_ids[:1] or ["a1-000"],
                evidence_sentence=EVIDENCE[0].sentence,
                reason="" if normalize(c.text) in self.true else "the evidence gives another figure",
            )
            for c in claims
        ]


@pytest.fixture
def session(settings):
    """The code location's model, in a session opened outside a run (one per test)."""
    return build_resources(settings)["model"].open_session()


def checked(drafts: list, verifier: "ScriptedVerifier") -> list:
    """The fact-check rows of drafts as the `fact_checks` asset makes them, with the scripted
    verifier deciding: what refinement and the summaries start from."""
    claims = [Claim(id=d.claim_id, text=d.text, cited_chunk_ids=d.cited_chunk_ids) for d in drafts]
    return fact_check_rows(drafts, check_sentences(verifier, claims), "v1")


def brief(*sentences: tuple[str, list[int]]) -> dict:
    return {"sentences": [{"text": t, "evidence": n} for t, n in sentences]}


@pytest.mark.integration
def test_a_citation_outside_the_evidence_list_is_reasked_and_the_text_kept_as_written(llm, session):
    answers = iter(
        [brief((TRUE[0], [9]), (TRUE[1], [2]), (TRUE[2], [3])), brief((TRUE[0], [1]), (TRUE[1], [2]), (TRUE[2], [3]))]
    )
    llm.scripts["DraftBrief"] = lambda messages: next(answers)
    [(answer, trace_id)] = session.map_traced_structured(
        [draft_messages("Acme Robotics", EVIDENCE)], citing_within(3), tier="strong"
    )
    assert llm.calls_for("DraftBrief") == 2 and "cites [9]" in llm.calls[-1]["messages"][-1]["content"]
    prompt = llm.calls[0]["messages"][0]["content"]
    assert "<evidence>\n[1] (Acme funding, 2026-03-03) Acme Robotics raised" in prompt
    rows = claims_from_brief("Acme Robotics", EVIDENCE, answer, trace_id, 4)
    assert [r.text for r in rows] == TRUE and {r.origin for r in rows} == {"model"}
    assert rows[0].cited_chunk_ids == ["a1-000"] and rows[0].evidence_list == EVIDENCE


@pytest.mark.unit
def test_a_brief_that_writes_one_sentence_twice_is_refused_naming_the_copy():
    """Copies that differ only in case, punctuation or a stray label are one sentence; the
    message names the copy and the sentence it repeats, so the re-ask can say what to fix."""
    schema = brief_schema(draft_messages("Acme Robotics", EVIDENCE), len(EVIDENCE))
    copied = brief((TRUE[0], [1]), (TRUE[1], [2]), ("2026: " + TRUE[0].upper().rstrip("."), [1]), (TRUE[2], [3]))
    with pytest.raises(ValueError) as raised:
        schema.model_validate(copied)
    message = str(raised.value)
    assert f"sentence 3 repeats sentence 1 ('2026: {TRUE[0].upper().rstrip('.')}')" in message, message
    assert "sentence 4" not in message
    assert schema.model_validate(brief((TRUE[0], [1]), (TRUE[1], [2]), (TRUE[2], [3]))).sentences


@pytest.mark.unit
def test_a_near_repeat_in_an_accepted_brief_is_dropped_before_it_becomes_a_claim():
    """The same words less a few is no new fact: dropped within its draft, counted; another
    draft may tell it, and evidence sentences that stand in are never dropped."""
    shorter = "Nordic Capital led a 40 million euro Series C."
    rows = claims_from_brief(
        "Acme Robotics",
        EVIDENCE,
        citing_within(3).model_validate(brief((TRUE[0], [1]), (shorter, [1]), (TRUE[1], [2]))),
        "t1",
        4,
    )
    other = claims_from_brief(
        "Nordic Capital", EVIDENCE, citing_within(1).model_validate(brief((shorter, [1]))), "t2", 4
    )
    kept, repeats = without_repeats(rows + other)
    assert [r.text for r in repeats] == [shorter] and repeats[0].topic == "Acme Robotics"
    assert [r.text for r in kept] == [TRUE[0], TRUE[1], shorter]
    stand_ins = claims_from_brief("Acme Robotics", EVIDENCE * 2, RuntimeError("outage"), "", 4)
    assert without_repeats(stand_ins)[1] == []


@pytest.mark.unit
def test_a_failed_draft_falls_back_to_evidence_sentences_marked_extractive():
    rows = claims_from_brief("Acme Robotics", EVIDENCE, RuntimeError("outage"), "", 2)
    assert [r.origin for r in rows] == ["extractive", "extractive"] and rows[0].text == EVIDENCE[0].sentence
    assert rows[0].model_error == "outage"


@pytest.mark.integration
def test_a_sentence_is_supported_only_when_all_its_atomic_claims_are(llm, session):
    compound = f"{TRUE[0][:-1]} and {FALSE[0].lower()}{FALSE[1:]}"
    llm.scripts["AtomicClaims"] = lambda messages: {"claims": [TRUE[0], FALSE]}
    verifier = ScriptedVerifier([*TRUE, compound])
    [whole] = check_sentences(verifier, [Claim(id="c", text=compound)])
    [split] = check_sentences(verifier, [Claim(id="c", text=compound)], llm=session, decompose=True)
    assert whole.verdict == "supported"
    assert split.verdict == "refuted" and split.atomic_claims == [TRUE[0], FALSE] and FALSE in split.reason


def acme_summary(published, fate, session, verifier):
    """The one-topic summary of Acme Robotics from the claims that passed, as the summaries asset writes it."""
    [summary] = write_summaries(
        ["Acme Robotics"],
        published,
        fate_counts(fate),
        llm=session,
        verifier=verifier,
        decompose=False,
        signals_by_doc={},
        index_version="v1",
    )
    return summary


@pytest.mark.integration
def test_refinement_revises_withdraws_and_caps_and_nothing_unsupported_is_published(llm, session):
    llm.scripts["DraftBrief"] = lambda messages: brief(
        (TRUE[0], [1]),
        (FALSE, [1]),
        ("Acme Robotics was bought by Globex.", [2]),
        ("Acme Robotics doubled its staff.", [3]),
    )
    [(answer, trace_id)] = session.map_traced_structured(
        [draft_messages("Acme Robotics", EVIDENCE)], citing_within(3), tier="strong"
    )
    drafts = claims_from_brief("Acme Robotics", EVIDENCE, answer, trace_id, 4)
    verifier = ScriptedVerifier(TRUE)
    checks = checked(drafts, verifier)

    def reviser(messages):
        claim = messages[0]["content"]
        if FALSE in claim:  # fixed in round 1
            return {
                "action": "revise",
                "sentence": TRUE[0].replace("Nordic Capital led", "Led by Nordic Capital, it was"),
                "evidence": [1],
            }
        if "Globex" in claim:
            return {"action": "withdraw", "sentence": "", "evidence": []}
        return {"action": "revise", "sentence": "Acme Robotics tripled its staff.", "evidence": [3]}  # stays wrong

    verifier.true.add(normalize(TRUE[0].replace("Nordic Capital led", "Led by Nordic Capital, it was")))
    verifier.true.discard(normalize(EVIDENCE[1].sentence))  # so the withdrawn claim's stand-in fails too
    llm.scripts["ClaimRevision"] = reviser
    rows = refine(drafts, checks, llm=session, verifier=verifier, rounds=2, decompose=False)
    actions = sorted((r.round, r.action, r.verdict) for r in rows)
    assert actions == [
        (1, "revise", "refuted"),
        (1, "revise", "supported"),
        (1, "withdraw", ""),
        (2, "revise", "refuted"),
        (3, "extractive", "refuted"),
        (3, "extractive", "supported"),
    ]
    stand_in = next(r for r in rows if r.action == "extractive")
    assert stand_in.after == EVIDENCE[2].sentence and stand_in.evidence_chunk_ids == ["a3-000"]
    published, fate = outcomes(checks, rows)
    assert sorted(fate.values()) == ["extractive", "model", "revised", "withdrawn"]
    texts = [c.text for c in published]
    assert FALSE not in texts and not any("Globex" in t or "staff" in t for t in texts)

    # Summaries: the model's paragraph, every sentence verified; an unsupported one is removed and counted,
    # and the supported claim it cited that no kept sentence covers stands in for it.
    paragraph = {
        "sentences": [
            {"text": texts[0], "claims": [1]},
            {"text": "Acme Robotics is now worth a billion euros.", "claims": [1, 2]},
        ]
    }
    llm.scripts["TopicParagraph"] = lambda messages: paragraph
    summary = acme_summary(published, fate, session, verifier)
    assert [s.text for s in summary.sentences] == [texts[0], texts[1]]
    assert [s.origin for s in summary.sentences] == ["model", "claim"]
    assert summary.written_sentences == 2 and summary.removed_sentences == 1 and summary.excluded_claims == 1
    digest = render_digest([summary])
    assert "billion" not in digest and FALSE not in digest and "Globex" not in digest


@pytest.mark.integration
def test_when_no_summary_sentence_holds_the_supported_claims_are_the_paragraph(llm, session):
    verifier = ScriptedVerifier(TRUE)
    drafts = claims_from_brief("Acme Robotics", EVIDENCE, RuntimeError("down"), "", 3)
    checks = checked(drafts, verifier)
    published, fate = outcomes(checks, [])
    llm.scripts["TopicParagraph"] = lambda messages: {
        "sentences": [{"text": "Acme Robotics conquered the moon.", "claims": [1]}]
    }
    summary = acme_summary(published, fate, session, verifier)
    assert [s.origin for s in summary.sentences] == ["claim"] * 3 and summary.removed_sentences == 1
    assert "moon" not in summary.summary


def fate_counts(fate: dict[str, str]) -> Counter:
    return Counter({"Acme Robotics": sum(v in ("withdrawn", "unsupported") for v in fate.values())})
