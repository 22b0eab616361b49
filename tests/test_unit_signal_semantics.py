"""Signals checked for meaning, as pure rules: a place typed person, a figure labelled with
words its sentence does not use, a tone the document's own event words contradict, and the
labelled sample that kinds and tones are measured against. No model, server or run."""

from __future__ import annotations

from pathlib import Path

import pytest

from resources.documents.parsing import load_corpus
from resources.pipeline_config import SAMPLE_CORPUS_DIR
from resources.signals.labels import LabelledDocument, load_signal_labels, score
from resources.signals.semantics import CorpusUsage, figure_problem, person_problem, tone_contradiction

pytestmark = pytest.mark.unit

KINDS = {"company", "person", "place", "product", "organisation", "other"}
TONES = {"positive", "negative", "neutral", "mixed"}


@pytest.mark.parametrize(
    ("name", "sentence", "cue"),
    [
        ("Rotterdam", "Northwind Robotics will fund a second line at its factory in Rotterdam.", "in Rotterdam"),
        ("Tartu", "Quanta Ledger opened an engineering hub in Tartu with 45 developers.", "in Tartu"),
        ("Badajoz", "The batteries will be installed at a solar park near Badajoz.", "near Badajoz"),
        ("Seville", "The Seville plant currently employs 280 people.", "Seville plant"),
        ("Rotterdam", "It builds at its factory in the Port of Rotterdam.", "Port of Rotterdam"),
    ],
)
def test_a_place_typed_person_is_flagged_from_its_own_sentence(name, sentence, cue):
    reason = person_problem(name, sentence)
    assert "place" in reason and cue in reason


def test_a_product_typed_person_is_flagged():
    reason = person_problem("Tern", "Versmarkt has ordered 150 Tern robots from Northwind Robotics.")
    assert "product" in reason and "Tern robots" in reason


def test_a_person_is_not_flagged():
    assert person_problem("Maarten Visser", "Chief executive Maarten Visser said the money will fund a line.") == ""
    assert person_problem("Ingrid Dahl", "Ingrid Dahl stepped down as chief executive of Bluefin Foods.") == ""


def test_a_name_the_corpus_uses_otherwise_is_flagged_when_its_own_sentence_says_nothing():
    sentence = "Chief executive Kristjan Tamm said Tartu was chosen because of its university."
    assert person_problem("Tartu", sentence) == ""
    by_text = CorpusUsage.of([], ["Quanta Ledger opened an engineering hub in Tartu in September 2026.", sentence])
    assert "corpus uses it as a place: 'hub in Tartu'" in person_problem("Tartu", sentence, by_text, "26.md")
    by_signals = CorpusUsage.of([("22.md", "Tartu", "place"), ("26.md", "Tartu", "person")], [sentence])
    assert "typed place in 1 other document(s), e.g. 22.md" in person_problem("Tartu", sentence, by_signals, "26.md")
    # The document's own typing is no evidence against itself.
    alone = CorpusUsage.of([("26.md", "Tartu", "place")], [sentence])
    assert person_problem("Tartu", sentence, alone, "26.md") == ""


def test_a_figure_label_not_in_its_evidence_is_flagged():
    sentence = "Northwind Robotics closed a Series C funding round of 65 million euros on 13 January 2026."
    assert "Mastrokriti" in figure_problem("Mastrokriti", "2026", sentence)
    assert "no words" in figure_problem("of the", "65", sentence)
    assert "figure" in figure_problem("figure", "65", sentence)
    assert "does not occur" in figure_problem("funding round", "75", sentence)
    assert figure_problem("Series C funding round", "65", sentence) == ""
    # Words of the sentence in another form still count as the sentence's.
    assert figure_problem("employees", "310", "Northwind Robotics employed 310 people at the end of 2025.") == ""


def test_a_recall_tagged_positive_is_a_contradiction():
    recall = "Bluefin Foods recalled 12,000 packs. The Bluefin Foods recall followed the discovery of mustard."
    assert "recall" in tone_contradiction("positive", recall)
    assert tone_contradiction("negative", recall) == ""
    assert tone_contradiction("neutral", recall) == ""
    launch = "Northwind Robotics launched the Tern, a picking robot."
    assert "launched" in tone_contradiction("negative", launch)
    # A document with news both ways contradicts no tone.
    both = "Helios Grid more than doubled its revenue. Helios Grid posted a net loss of 18 million euros."
    assert tone_contradiction("positive", both) == tone_contradiction("negative", both) == ""


def test_score_counts_labelled_entities_and_ignores_the_rest():
    labelled = LabelledDocument(
        doc_id="0" * 16, title="t", tone=["negative", "mixed"], entities={"Rotterdam": ["place"], "Tern": ["product"]}
    )
    result = score(labelled, [("Rotterdam", "person"), ("The Tern", "product"), ("Utrecht", "place")], "positive")
    assert (result.entities, result.entities_right, result.tone_right) == (2, 1, False)
    assert result.wrong_kinds == ["Rotterdam: person (expected place)"]
    assert score(labelled, [], "mixed").tone_right


def test_the_labelled_sample_is_the_bundled_corpus_byte_for_byte():
    labels = load_signal_labels()
    documents, _ = load_corpus([SAMPLE_CORPUS_DIR])
    prose = {Path(d.path).name: d for d in documents if Path(d.path).suffix == ".md"}
    assert set(labels.documents) == set(prose)
    for name, labelled in labels.documents.items():
        document = prose[name]
        assert labels.for_document(document.doc_id) is labelled, name
        assert labelled.title == document.title
        assert set(labelled.tone) <= TONES and all(set(kinds) <= KINDS for kinds in labelled.entities.values())
        assert all(entity in document.text for entity in labelled.entities), name
        # The rule never contradicts what a careful reader chose: otherwise the rule, not the model, is wrong.
        assert tone_contradiction(labelled.tone[0], f"{document.title}. {document.text}") == "", name
    assert labels.for_document("f" * 16) is None  # an edited file is not scored
