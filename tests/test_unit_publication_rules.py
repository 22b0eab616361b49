"""The publication rules on the faults a small model actually produced: prompt echoes,
repeated sentences, dangling starts and evidence-list furniture, and the sentences that
must still pass them."""

import pytest
from pydantic import ValidationError

from assets.digest.digest_report import stage_counts
from assets.digest.draft_revisions import PublishableClaim
from assets.digest.drafts import (
    BriefSentence,
    DraftBrief,
    EvidenceItem,
    brief_schema,
    claims_from_brief,
    draft_messages,
    without_list_furniture,
)
from assets.digest.summaries import (
    SummarySentence,
    TopicSummary,
    assemble,
    claims_as_sentences,
    publication_breaches,
    publish,
    standing_in,
)
from resources.verification.publication_rules import (
    DANGLING_START_DROPPED,
    DANGLING_START_REPAIRED,
    LIST_FURNITURE,
    PROMPT_ECHO,
    REPEATED_SENTENCE,
    Publication,
    breaches,
    dangling_start,
    find_prompt_echo,
    has_verb,
    instruction_text,
    is_list_furniture,
    repair_start,
    repeated_sentence,
    sentence_key,
)

pytestmark = pytest.mark.unit

PROMPT = (
    "Write a headline for the summary below. At most 80 characters, stating the summary's main fact and nothing "
    "the summary does not say.\n\n<summary>\nQuanta Ledger launched the Quanta Business Card, a debit card for "
    "small companies, on 1 December 2026.\n</summary>"
)
EVIDENCE = "Quanta Ledger launched the Quanta Business Card, a debit card for small companies, on 1 December 2026."


def test_a_run_of_instruction_words_is_an_echo():
    echo = find_prompt_echo("At most 80 characters, stating the summary's main fact and nothing else", PROMPT)
    assert echo == "at most 80 characters stating the summary s main fact and nothing"


def test_words_of_the_evidence_are_never_an_echo():
    assert find_prompt_echo(EVIDENCE, PROMPT, EVIDENCE) is None
    assert find_prompt_echo(EVIDENCE, PROMPT) is None  # the data block is data even when not named


def test_an_evidence_run_repeated_in_the_instructions_is_not_an_echo():
    prompt = "Say what happened: Acme opened a factory in Tampere this year. Facts: Acme opened a factory in Tampere."
    assert find_prompt_echo("Acme opened a factory in Tampere.", prompt, "Acme opened a factory in Tampere.") is None


def test_a_shorter_run_than_min_run_is_not_an_echo():
    assert find_prompt_echo("The summary's main fact is the launch.", PROMPT) is None
    assert find_prompt_echo("stating the summary's main fact", PROMPT, min_run=4) == "stating the summary s main fact"


def test_the_drafting_prompt_echo_is_found_and_its_evidence_is_not():
    items = [
        EvidenceItem(number=1, chunk_id="q-000", doc_id="q", title="Quanta news", sentence=EVIDENCE),
    ]
    prompt = draft_messages("Quanta Ledger", items)[0]["content"]
    assert EVIDENCE in prompt and EVIDENCE not in instruction_text(prompt)
    assert find_prompt_echo(EVIDENCE, prompt) is None
    assert find_prompt_echo("Use only the facts in the numbered evidence list for Quanta Ledger.", prompt)


def test_sentences_are_compared_without_case_punctuation_or_spacing():
    assert sentence_key("Quanta Ledger's revenue  rose 12%!") == sentence_key("quanta ledger s Revenue rose 12 %")
    earlier = ["Quanta Ledger reported revenue of 12 million euros in 2026."]
    assert repeated_sentence("quanta ledger reported revenue of 12 million euros in 2026", earlier) == earlier[0]
    assert repeated_sentence("In 2026 Quanta Ledger reported revenue of 12 million euros.", earlier) == earlier[0]
    assert repeated_sentence("Quanta Ledger reported revenue.", earlier) == earlier[0]  # adds nothing


def test_a_sentence_with_another_fact_is_not_a_repeat():
    earlier = ["Quanta Ledger reported revenue of 12 million euros in 2026."]
    assert repeated_sentence("Quanta Ledger reported revenue of 14 million euros in 2026.", earlier) is None
    assert repeated_sentence("Quanta Ledger reported profit of 12 million euros in 2026.", earlier) is None
    assert repeated_sentence("Acme opened a factory in Tampere.", earlier) is None
    assert repeated_sentence("Anything at all.", []) is None


@pytest.mark.parametrize(
    "sentence, label",
    [
        ("2026: Quanta Ledger launched a debit card.", "2026:"),
        ("Q3 2026: Acme Robotics hired 300 workers.", "Q3 2026:"),
        ("May 2026 – Acme opened its factory.", "May 2026 –"),
        ("Update: Acme opened its factory.", "Update:"),
        ("[2] Acme opened its factory.", "[2]"),
    ],
)
def test_a_stray_label_is_a_dangling_start_and_is_stripped(sentence, label):
    assert dangling_start(sentence, []) == f"starts with the stray label {label!r}"
    assert dangling_start(sentence, ["Acme is a robot maker."]) is not None
    repaired = repair_start(sentence, [])
    assert repaired is not None and repaired == sentence[sentence.index(label) + len(label) :].strip()
    assert dangling_start(repaired, []) is None


def test_a_label_over_nothing_that_reads_as_a_sentence_is_dropped():
    assert repair_start("2026: the first half of 2026.", []) is None
    assert repair_start("2026: The company hired 300 workers.", []) is None


@pytest.mark.parametrize(
    "sentence", ["The company raised 40 million euros.", "It opened a factory.", "They hired 300 workers."]
)
def test_a_reference_without_antecedent_dangles_only_at_the_start_of_a_paragraph(sentence):
    assert "refers to nothing" in (dangling_start(sentence, []) or "")
    assert repair_start(sentence, []) is None
    assert dangling_start(sentence, ["Acme Robotics is a robot maker."]) is None
    assert repair_start(sentence, ["Acme Robotics is a robot maker."]) == sentence


@pytest.mark.parametrize(
    "sentence",
    [
        "Acme Robotics raised 40 million euros on 3 March 2026.",
        "Itemized costs rose.",
        "This year Acme opened a factory.",
        "The Tampere site will build picking arms.",
        "2026 was a strong year for Acme.",
    ],
)
def test_a_well_started_sentence_does_not_dangle(sentence):
    assert dangling_start(sentence, []) is None
    assert repair_start(sentence, []) == sentence


@pytest.mark.parametrize(
    "line",
    [
        "European Industrial Technology Outlook for 2027, 2026-12-10.",
        "May 2026",
        "The first half of 2026.",
        "Quanta Ledger",
        "2026-12-10",
        "Q3 2026.",
        "Nordic Fintech Review (1 December 2026)",
        "Annual Report of Quanta Ledger",
        "Revenue in the first half of 2026",
    ],
)
def test_titles_and_dates_are_list_furniture(line):
    assert is_list_furniture(line)


@pytest.mark.parametrize(
    "sentence",
    [
        "Quanta Ledger launched the Quanta Business Card on 1 December 2026.",
        "Revenue rose 12 percent in the first half of 2026.",
        "Acme Robotics will open its Tampere factory in September 2026.",
        "Analysts expect growth.",
        "Sales climb 5 percent.",
        "Liisa Korhonen said demand drove the growth.",
        "The Tampere site builds picking arms.",
    ],
)
def test_sentences_are_not_list_furniture(sentence):
    assert has_verb(sentence)
    assert not is_list_furniture(sentence)


def test_a_digest_publishes_each_fact_once_and_counts_what_each_rule_did():
    publication = Publication()
    first = ["2026: Quanta Ledger launched a debit card for small companies.", "It costs nothing to open."]
    second = [
        "The company reported revenue of 12 million euros.",  # opens a paragraph: refers to nothing
        "Quanta Ledger launched a debit card for small companies!",  # told under the first topic
        "Nordic Fintech Review, 2026-12-10.",
        "Use only the facts in the numbered evidence list for Quanta Ledger.",
        "Quanta Ledger reported revenue of 12 million euros.",
    ]
    prompt = "Write about Quanta Ledger. Use only the facts in the numbered evidence list for Quanta Ledger."
    kept_first: list[str] = []
    for sentence in first:
        if (text := publication.admit(sentence, kept_first, prompt)) is not None:
            kept_first.append(text)
    kept_second: list[str] = []
    for sentence in second:
        if (text := publication.admit(sentence, kept_second, prompt)) is not None:
            kept_second.append(text)
    assert kept_first == ["Quanta Ledger launched a debit card for small companies.", "It costs nothing to open."]
    assert kept_second == ["Quanta Ledger reported revenue of 12 million euros."]
    assert publication.rule_counts() == {
        PROMPT_ECHO: 1,
        LIST_FURNITURE: 1,
        DANGLING_START_DROPPED: 1,
        DANGLING_START_REPAIRED: 1,
        REPEATED_SENTENCE: 1,
    }
    assert breaches([kept_first, kept_second], [(prompt, ""), (prompt, "")]) == []


def test_breaches_name_every_broken_rule_of_a_published_digest():
    prompt = "Write about Quanta Ledger. Use only the facts in the numbered evidence list for Quanta Ledger."
    found = breaches(
        [
            ["2026: Quanta Ledger launched a card.", "May 2026"],
            ["The company hired staff.", "Quanta Ledger launched a card.", "Use only the facts in the numbered list."],
        ],
        [(prompt, ""), (prompt, "")],
    )
    assert len(found) == 5, found
    assert any("stray label" in f for f in found) and any("list furniture" in f for f in found)
    assert any("refers to nothing" in f for f in found) and any("repeats an earlier" in f for f in found)
    assert any("echoes the prompt" in f for f in found)


def _items() -> list[EvidenceItem]:
    return [
        EvidenceItem(
            number=1,
            chunk_id="q-000",
            doc_id="q",
            title="Quanta Ledger Launches Business Debit Card",
            published="2026-12-01",
            sentence=EVIDENCE,
        )
    ]


def test_a_brief_that_echoes_its_instructions_is_invalid_with_the_echo_named():
    messages = draft_messages("Quanta Ledger", _items())
    schema = brief_schema(messages, 1, minimum=1)
    assert schema.__name__ == "DraftBrief"  # the name the provider's response format carries
    assert schema.model_validate({"sentences": [{"text": EVIDENCE, "evidence": [1]}]})
    echo = "Use only the facts in the numbered evidence list inside the block."
    with pytest.raises(ValidationError, match="sentence 2 repeats the instructions"):
        schema.model_validate({"sentences": [{"text": EVIDENCE, "evidence": [1]}, {"text": echo, "evidence": [1]}]})


def test_list_furniture_in_a_brief_is_not_a_claim_and_labels_are_stripped():
    brief = DraftBrief(
        sentences=[
            BriefSentence(text="2026: " + EVIDENCE, evidence=[1]),
            BriefSentence(text="(Quanta Ledger Launches Business Debit Card, 2026-12-01) " + EVIDENCE, evidence=[1]),
            BriefSentence(text="Quanta Ledger Launches Business Debit Card, 2026-12-01.", evidence=[1]),
        ]
    )
    claims, furniture = without_list_furniture(claims_from_brief("Quanta Ledger", _items(), brief, "t", 4))
    assert [c.text for c in claims] == [EVIDENCE, EVIDENCE]
    assert [c.text for c in furniture] == ["Quanta Ledger Launches Business Debit Card, 2026-12-01."]


def _claim(number: int, text: str) -> PublishableClaim:
    return PublishableClaim(
        claim_id=f"c{number}",
        topic="Quanta Ledger",
        text=text,
        origin="model",
        verdict="supported",
        score=0.9,
        evidence_chunk_ids=["q-000"],
        evidence_sentence=text,
    )


def test_a_failed_summary_sentence_gives_way_to_the_claims_it_cited_that_nothing_else_covers():
    one, two = _claim(1, "Quanta Ledger opened a hub in Tartu."), _claim(2, EVIDENCE)
    kept = SummarySentence(
        text="Quanta Ledger opened a Tartu hub.",
        origin="model",
        claim_ids=["c1"],
        verdict="supported",
        evidence_chunk_ids=["q-000"],
    )
    paragraph = standing_in([([one], kept), ([one, two], None), ([two], None)])
    assert [(s.text, s.origin) for s in paragraph] == [(kept.text, "model"), (EVIDENCE, "claim")]


def test_publishing_a_paragraph_repairs_its_start_and_drops_what_an_earlier_paragraph_said():
    publication = Publication()
    first = publish(publication, claims_as_sentences([_claim(1, "2026: " + EVIDENCE)]), "", "")
    second = publish(
        publication, claims_as_sentences([_claim(2, EVIDENCE), _claim(3, "It opened a Tartu hub in 2026.")]), "", ""
    )
    assert [s.text for s in first] == [EVIDENCE] and first[0].claim_ids == ["c1"]
    assert second == []
    assert publication.rule_counts()[DANGLING_START_REPAIRED] == 1
    assert publication.rule_counts()[REPEATED_SENTENCE] == 1
    assert publication.rule_counts()[DANGLING_START_DROPPED] == 1


def test_the_summaries_check_reads_the_published_digest_for_broken_rules():
    claims = [_claim(1, EVIDENCE)]
    sentence = claims_as_sentences(claims)[0]

    def row(topic: str, *texts: str) -> TopicSummary:
        return assemble(
            topic,
            [sentence.model_copy(update={"text": t}) for t in texts],
            written=0,
            removed=0,
            excluded=0,
            signals_by_doc={},
            index_version="v1",
        )

    assert publication_breaches([row("Quanta Ledger", EVIDENCE)], claims) == []
    broken = publication_breaches(
        [
            row("Quanta Ledger", EVIDENCE, "Write a summary paragraph about Quanta Ledger for a reader."),
            row("Bluefin Foods", "The company " + EVIDENCE[len("Quanta Ledger ") :], EVIDENCE),
        ],
        claims,
    )
    assert len(broken) == 3, broken


def test_the_digest_report_counts_what_each_rule_did():
    row = assemble(
        "Quanta Ledger",
        claims_as_sentences([_claim(1, EVIDENCE)]),
        written=1,
        removed=0,
        excluded=0,
        rule_counts={REPEATED_SENTENCE: 2, DANGLING_START_REPAIRED: 1},
        signals_by_doc={},
        index_version="v1",
    )
    counts = stage_counts([], [], [], [row, row])["summaries"]
    assert counts["repeats (dropped)"] == 4 and counts["stray labels (stripped)"] == 2
    assert counts["prompt echoes (dropped)"] == 0
