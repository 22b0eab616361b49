"""Signals checked for meaning on real runs: the fake server scripted to make each mistake a
small model makes (a place typed person, a figure labelled with a word its sentence never
uses, a recall tagged positive), and the bundled corpus scored against its labelled sample.
The review repairs what the documents' own words settle and nothing else: a model whose
mistakes are of that kind passes the check once reviewed, one whose mistakes are not still
fails it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import AssetSelection, DagsterInstance, Definitions, ExecuteInProcessResult, define_asset_job

from ai_pipelines.backfill import run_over_all_documents
from ai_pipelines.definitions import build_definitions, build_resources
from ai_pipelines.settings import Settings
from assets.digest.signals import CORRECTED_KINDS
from resources.documents.batches import batch_of
from tests.conftest import article, partition_metadata, warehouse_rows, write_file
from tests.fake_openai import FakeOpenAI, extract_signals, numbered_sentences

pytestmark = pytest.mark.integration


def run_signals(settings: Settings) -> ExecuteInProcessResult:
    """Signals and what they are read from, with their checks, over every document."""
    defs = build_definitions(settings)
    job = define_asset_job(
        "signals_and_inputs", selection=AssetSelection.assets("signals").upstream().required_multi_asset_neighbors()
    )
    merged = Definitions.merge(defs, Definitions(jobs=[job]))
    return run_over_all_documents(
        merged.resolve_job_def("signals_and_inputs"),
        DagsterInstance.ephemeral(),
        build_resources(settings)["pipeline"],
        raise_on_error=False,
    )


def check(result: ExecuteInProcessResult, name: str) -> Any:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def metadata(evaluation: Any) -> dict[str, Any]:
    return {k: v.value for k, v in evaluation.metadata.items()}


def cites(messages: list[dict[str, str]], words: str) -> int:
    return next(i for i, s in enumerate(numbered_sentences(messages)) if words in s)


def with_faults(messages: list[dict[str, str]]) -> dict[str, Any]:
    """The default extraction, except the three mistakes, each in the document it fits."""
    answer = extract_signals(messages)
    content = messages[0]["content"]
    if "Raises 65 Million Euros" in content:
        rotterdam = {"name": "Rotterdam", "kind": "person", "sentence": cites(messages, "factory in Rotterdam")}
        answer["entities"] = [*answer["entities"][:3], rotterdam]
        answer["key_figures"] = [
            answer["key_figures"][0],
            {"label": "Mastrokriti", "value": "2026", "sentence": cites(messages, "13 January 2026")},
        ]
    if "Recalls Batch" in content:
        answer["sentiment"] = "positive"
    return answer


def careless(messages: list[dict[str, str]]) -> dict[str, Any]:
    """What a model that does not read makes of every document: people, bad news. Most of it
    the documents' own words cannot settle: a name no phrase of its document gives a kind, a
    tone where no event word or event words both ways speak."""
    answer = extract_signals(messages)
    answer["entities"] = [{**e, "kind": "person"} for e in answer["entities"]]
    return {**answer, "sentiment": "negative"}


def calls_everything_good_news(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A model that calls every document good news: on the recall, the outage and the delay,
    a mistake the documents' own event words settle."""
    return {**extract_signals(messages), "sentiment": "positive"}


def test_each_scripted_fault_is_flagged_and_counted(settings: Settings, llm: FakeOpenAI):
    llm.scripts["ExtractedSignals"] = with_faults
    result = run_signals(settings)

    rows = {r["document"]: r for r in warehouse_rows(settings, "signals")}
    series_c, recall = rows["corpus/01-northwind-series-c.md"], rows["corpus/20-bluefin-foods-recall.md"]
    assert "'factory in Rotterdam'" in series_c["entities"] and series_c["flagged_entities"] == 1
    # Its own sentence settles what Rotterdam is, and the recall's own words its tone: the review
    # corrects both, and keeps the model's answers and the flags beside the corrections.
    assert series_c["corrected_entities"] == 1 and '"model_kind":"person"' in series_c["entities"].replace(" ", "")
    assert (recall["sentiment"], recall["model_sentiment"]) == ("negative", "positive")
    assert recall["sentiment_correction"].endswith("set to negative")
    assert "Mastrokriti" in series_c["key_figures"] and series_c["flagged_figures"] == 1
    assert "tagged positive" in recall["tone_contradiction"] and "recall" in recall["tone_contradiction"]
    assert sum(r["flagged_entities"] + r["flagged_figures"] for r in rows.values()) == 2
    assert sum(bool(r["tone_contradiction"]) for r in rows.values()) == 1

    # Each batch's figures are its documents' (these two hold every flag and correction of the run's).
    per_batch = partition_metadata(result, "signals")
    assert per_batch[batch_of("corpus/01-northwind-series-c.md")]["flagged_entities"] == 1
    assert per_batch[batch_of("corpus/01-northwind-series-c.md")]["flagged_figures"] == 1
    assert per_batch[batch_of("corpus/20-bluefin-foods-recall.md")]["tone_contradictions"] == 1
    assert per_batch[batch_of("corpus/01-northwind-series-c.md")]["corrected_to_place"] == 1
    assert per_batch[batch_of("corpus/20-bluefin-foods-recall.md")]["corrected_tones"] == 1
    assert sum(m.get("tone_contradictions", 0) for m in per_batch.values()) == 1

    consistency = metadata(check(result, "signal_consistency"))
    assert (consistency["flagged_entities"], consistency["flagged_figures"], consistency["tone_contradictions"]) == (
        1,
        1,
        1,
    )
    assert consistency["tone_contradiction_share"] == round(1 / 30, 3)
    assert "Rotterdam (person)" in consistency["flags"] and "Mastrokriti: 2026" in consistency["flags"]
    # The sample scores the model's answers and the reviewed ones: the mistakes cost the model,
    # not what later steps read; the corrections are listed with their reasons.
    validity = metadata(check(result, "signal_validity"))
    assert validity["entity_kind_accuracy_model"] < validity["entity_kind_accuracy"]
    assert validity["tone_accuracy_model"] < validity["tone_accuracy"]
    assert "Rotterdam: person" not in validity["sample_misses"] and "tone: positive" not in validity["sample_misses"]
    assert "Rotterdam (person)" in validity["corrections"] and "tone positive" in validity["corrections"]
    assert validity["corrected_tones"] == 1 and validity["corrected_entities"] >= 1


def test_the_run_reports_accuracy_against_the_labelled_sample_and_the_check_holds_it(
    settings: Settings, llm: FakeOpenAI
):
    good = run_signals(settings)
    validity = check(good, "signal_validity")
    figures = metadata(validity)
    assert validity.passed, validity.description
    assert figures["sample_documents"] == 30 and figures["sample_entities"] > 30
    assert figures["entity_kind_accuracy"] >= figures["min_entity_kind_accuracy"]
    assert figures["tone_accuracy"] >= figures["min_tone_accuracy"]
    assert "on 30 labelled documents, reviewed signals: entity kinds" in validity.description
    assert "the model's own: entity kinds" in validity.description and figures["gated_on"] == "reviewed signals"
    per_batch = partition_metadata(good, "signals")
    one = per_batch[batch_of("corpus/03-northwind-tern-launch.md")]
    assert one["run_entity_kind_accuracy"] == figures["entity_kind_accuracy"]
    assert one["run_tone_accuracy"] == figures["tone_accuracy"]
    assert sum(m.get("sample_entities", 0) for m in per_batch.values()) == figures["sample_entities"]
    assert check(good, "signal_consistency").passed

    llm.reset()
    llm.scripts["ExtractedSignals"] = careless
    bad = run_signals(settings.model_copy(update={"data_dir": settings.data_dir.parent / "careless"}))
    validity = check(bad, "signal_validity")
    figures = metadata(validity)
    assert not validity.passed, validity.description
    assert figures["entity_kind_accuracy"] < figures["min_entity_kind_accuracy"]
    assert figures["tone_accuracy"] < figures["min_tone_accuracy"]
    assert "reviewed entity-kind accuracy" in validity.description and "reviewed tone accuracy" in validity.description
    # The review repaired what the documents settle, and that was not enough.
    assert figures["corrected_entities"] > 0 and figures["corrected_tones"] > 0
    assert figures["entity_kind_accuracy_model"] < figures["entity_kind_accuracy"]
    assert figures["tone_accuracy_model"] < figures["tone_accuracy"]
    # Every document's signals are still valid and grounded: form alone would have passed them.
    assert figures["validity_rate"] == 1.0
    # Tagging a launch or a contract negative is a contradiction, warned about even once corrected.
    consistency = check(bad, "signal_consistency")
    assert not consistency.passed and metadata(consistency)["tone_contradictions"] == figures["corrected_tones"]


def test_mistakes_the_documents_own_words_settle_are_repaired_and_the_model_is_still_scored(
    settings: Settings, llm: FakeOpenAI
):
    llm.scripts["ExtractedSignals"] = calls_everything_good_news
    result = run_signals(settings)
    validity = check(result, "signal_validity")
    figures = metadata(validity)
    # Judged on its own tones, the model would fail the floor; what later steps read passes it.
    assert figures["tone_accuracy_model"] < figures["min_tone_accuracy"] <= figures["tone_accuracy"]
    assert validity.passed, validity.description
    rows = {r["document"]: r for r in warehouse_rows(settings, "signals")}
    outage = rows["corpus/27-quanta-ledger-outage.md"]
    assert (outage["sentiment"], outage["model_sentiment"]) == ("negative", "positive")
    assert "outage" in outage["sentiment_correction"]
    per_batch = partition_metadata(result, "signals")
    corrected = [m.get(f"corrected_to_{kind}", 0) for m in per_batch.values() for kind in CORRECTED_KINDS]
    assert sum(corrected) == figures["corrected_entities"]
    assert sum(m.get("corrected_tones", 0) for m in per_batch.values()) == figures["corrected_tones"] == 3


def test_on_another_corpus_the_cross_checks_only_warn(settings: Settings, llm: FakeOpenAI, tmp_path: Path):
    corpus = tmp_path / "corpus"
    write_file(
        corpus / "recall.md",
        article("Harbour Mills Recalls Flour", "Harbour Mills recalled 4,000 bags of flour in Bergen on 3 May 2026."),
    )
    write_file(
        corpus / "launch.md",
        article("Kestrel Bikes Launches Cargo Bike", "Kestrel Bikes launched the Osprey cargo bike in Ghent."),
    )
    llm.scripts["ExtractedSignals"] = careless
    result = run_signals(settings.model_copy(update={"corpus_dir": corpus}))
    validity = check(result, "signal_validity")
    assert validity.passed and metadata(validity)["sample_documents"] == 0
    assert "no document of the labelled sample" in validity.description
    consistency = check(result, "signal_consistency")
    assert not consistency.passed and consistency.severity.value == "WARN"
    assert metadata(consistency)["tone_contradictions"] == 1
