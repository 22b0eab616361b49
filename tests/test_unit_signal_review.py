"""The review of an extraction, as pure rules: what a document's own words settle is corrected,
with the model's answer and the reason kept; what they do not settle is left alone and flagged.
No model, server or run."""

from __future__ import annotations

import pytest

from assets.digest.signals import DocumentSignals, ExtractedEntity, ExtractedSignals, ground, review
from resources.documents.chunking import Chunk, evidence_sentences
from resources.documents.parsing import load_corpus
from resources.documents.records import SourceDocument
from resources.pipeline_config import SAMPLE_CORPUS_DIR
from resources.signals.labels import load_signal_labels
from resources.signals.review import kind_cues, review_kind, review_tone

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "model_kind", "sentences", "kind", "cue"),
    [
        ("Rotterdam", "person", ["Northwind Robotics will fund a second line at its factory in Rotterdam."], "place",
         "factory in Rotterdam"),
        ("Rotterdam", "company", ["It builds at its factory in the Port of Rotterdam."], "place", "Port of Rotterdam"),
        ("Port of Rotterdam", "person", ["The site lies in the harbour."], "place", "Port of Rotterdam"),
        ("Tern", "person", ["Northwind Robotics launched the Tern in May."], "product", "launched the Tern"),
        ("Tern", "place", ["Versmarkt has ordered 150 Tern robots."], "product", "Tern robots"),
        ("Fjord Salmon AS", "person", ["Fjord Salmon AS supplies the fish."], "company", "Fjord Salmon AS"),
        ("Kestrel", "person", ["Shares of Kestrel rose 4 percent."], "company", "Shares of Kestrel"),
        ("Kestrel", "place", ["Kestrel's revenue rose to 9 million euros."], "company", "Kestrel's revenue"),
        ("Ingrid Dahl", "company", ["Chief executive Ingrid Dahl said the plant is full."], "person",
         "Chief executive Ingrid Dahl"),
    ],
)  # fmt: skip
def test_a_kind_its_own_document_settles_is_corrected_with_the_models_answer_and_the_reason(
    name, model_kind, sentences, kind, cue
):
    result = review_kind(name, model_kind, sentences)
    assert result.kind == kind
    assert result.correction.startswith(f"typed {model_kind}, but the document uses it as a {kind}")
    assert cue in result.correction and not result.ambiguity


def test_a_kind_the_document_already_agrees_with_or_says_nothing_about_is_kept():
    assert review_kind("Rotterdam", "place", ["A factory in Rotterdam."]).correction == ""
    said_nothing = review_kind("Tartu", "person", ["Chief executive Kristjan Tamm said Tartu was chosen."])
    assert (said_nothing.kind, said_nothing.correction, said_nothing.ambiguity) == ("person", "", "")


def test_a_name_the_document_gives_two_kinds_is_left_alone_and_said_to_be_ambiguous():
    sentences = ["Helios Grid opened a plant in Seville.", "The Seville modules ship in May."]
    result = review_kind("Seville", "person", sentences)
    assert (result.kind, result.correction) == ("person", "")
    assert "place: 'plant in Seville'" in result.ambiguity and "product: 'Seville modules'" in result.ambiguity


@pytest.mark.parametrize(
    ("name", "sentence", "not_kind"),
    [
        ("Riga", "Quanta Ledger agreed to acquire the Riga fraud-detection startup Sargs Analytics.", "company"),
        ("Riga", "Quanta Ledger will acquire Riga-based Sargs Analytics.", "company"),
        ("Seville", "Helios Grid is building the Seville battery plant.", "product"),
        ("Northwind", "Zeeland Capital invested in Northwind last year.", "place"),
        ("Lars Moen", "Bluefin Foods names Lars Moen chief executive.", "company"),
    ],
)
def test_a_name_that_only_modifies_another_word_gets_no_kind_from_it(name, sentence, not_kind):
    assert not_kind not in kind_cues(name, [sentence])


def test_a_recall_tagged_positive_becomes_negative_and_the_contradiction_is_kept():
    text = "Bluefin Foods recalled 12,000 packs. The recall followed the discovery of mustard."
    result = review_tone("positive", text)
    assert result.sentiment == "negative" and result.event_words == ("recalled", "recall")
    assert result.correction.startswith("tagged positive, but its only event words are negative: recalled, recall")
    assert result.correction.endswith("set to negative") and result.contradiction in result.correction
    launch = review_tone("negative", "Northwind Robotics launched the Tern.")
    assert (launch.sentiment, launch.event_words) == ("positive", ("launched",))


@pytest.mark.parametrize(
    ("sentiment", "text"),
    [
        ("positive", "Helios Grid doubled its revenue. It posted a net loss of 18 million euros."),
        ("negative", "Helios Grid doubled its revenue. It posted a net loss of 18 million euros."),
        ("positive", "Bluefin Foods named a new chief executive."),
        ("neutral", "Bluefin Foods recalled 12,000 packs."),
        ("mixed", "Northwind Robotics launched the Tern."),
    ],
)
def test_a_tone_the_event_words_do_not_contradict_is_left_alone(sentiment, text):
    result = review_tone(sentiment, text)
    assert (result.sentiment, result.correction, result.contradiction) == (sentiment, "", "")


TEXT = (
    "Harbour Mills recalled 4,000 bags of flour on 3 May 2026. The flour was milled at its plant in Bergen. "
    "Chief executive Odd Lie said Tromso was never affected. Its Fjell platform runs from an office in Fjell."
)
DOCUMENT = SourceDocument(
    document="corpus/harbour.md", doc_id="a" * 16, path="harbour.md", title="Harbour Mills Recalls Flour",
    published="", text=TEXT, n_chars=len(TEXT),
)  # fmt: skip
OTHER_TEXT = "Nordic Rail opened a depot in Tromso."
OTHER = SourceDocument(
    document="corpus/rail.md", doc_id="b" * 16, path="rail.md", title="Nordic Rail Depot", published="",
    text=OTHER_TEXT, n_chars=len(OTHER_TEXT),
)  # fmt: skip
CHUNKS = [
    Chunk(document=DOCUMENT.document, chunk_id="c1", doc_id=DOCUMENT.doc_id, position=0, text=TEXT, char_start=0,
          char_end=len(TEXT))
]  # fmt: skip


def reviewed() -> DocumentSignals:
    extracted = ExtractedSignals(
        entities=[
            ExtractedEntity(name="Harbour Mills", kind="company", sentence=0),
            ExtractedEntity(name="Bergen", kind="person", sentence=1),
            ExtractedEntity(name="Tromso", kind="person", sentence=2),
            ExtractedEntity(name="Fjell", kind="person", sentence=3),
        ],
        events=[],
        key_figures=[],
        sentiment="positive",
        sentiment_sentence=2,
    )
    [row] = review([ground(DOCUMENT, CHUNKS, extracted)], [DOCUMENT, OTHER], {DOCUMENT.doc_id: CHUNKS})
    return row


def test_the_review_of_a_row_corrects_what_the_document_settles_and_flags_the_rest():
    row = reviewed()
    entities = {e.name: e for e in row.entities}
    bergen, tromso, fjell = entities["Bergen"], entities["Tromso"], entities["Fjell"]
    # Its own document puts Bergen in a place: corrected, the model's answer and both reasons kept.
    assert (bergen.kind, bergen.model_kind) == ("place", "person")
    assert "'plant in Bergen'" in bergen.correction and "place" in bergen.flag
    # Only another document uses Tromso as a place: the model's answer stands, flagged.
    assert (tromso.kind, tromso.correction) == ("person", "")
    assert "corpus uses it as a place: 'depot in Tromso'" in tromso.flag
    # Its own document uses Fjell as a product and as a place: left alone, flagged.
    assert (fjell.kind, fjell.correction) == ("person", "") and "'office in Fjell'" in fjell.flag
    assert (row.flagged_entities, row.corrected_entities) == (3, 1)
    assert [e.name for e in row.trusted_entities] == ["Harbour Mills", "Bergen"]
    # The tone follows the recall, and rests on the recall's sentence, not the one the model cited.
    assert (row.sentiment, row.model_sentiment, row.grounded_sentiment) == ("negative", "positive", "negative")
    assert "recalled" in row.tone_contradiction and row.sentiment_correction.endswith("set to negative")
    assert row.sentiment_evidence is not None and row.sentiment_evidence.quote.startswith("Harbour Mills recalled")


def test_on_the_labelled_sample_the_review_never_sets_a_kind_or_undoes_a_tone_the_reader_chose():
    """For every labelled name of the bundled corpus, the kind the review would set is nothing or
    a labelled one; no labelled tone is ever corrected. A guard against rules that misread, not an evaluation: the
    rules were checked against this same sample, so it cannot say how they do elsewhere."""
    labels = load_signal_labels()
    documents, _ = load_corpus([SAMPLE_CORPUS_DIR])
    for document in documents:
        labelled = labels.for_document(document.doc_id)
        if labelled is None:
            continue
        own = [document.title, *(s.text for s in evidence_sentences(document))]
        for name, kinds in labelled.entities.items():
            cues = kind_cues(name, own)
            assert len(cues) <= 1 and set(cues) <= set(kinds), (document.path, name, cues)
        for sentiment in labelled.tone:  # a tone the reader chose is never corrected away
            assert review_tone(sentiment, " ".join(own)).correction == "", (document.path, sentiment)
