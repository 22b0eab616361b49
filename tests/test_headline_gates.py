"""The headline gates: a judge proves itself before its verdicts count, and deterministic rules
hold every headline and meta description to the summary they are written for.

The project's own `summary_headlines` step is materialized from a small `summaries` table,
once with the embedded 135M model as writer and judge, and otherwise against the fake
server scripted as a writer that echoes its prompt, invents a fact or asks a question, and
as a capable judge (tests/fake_openai.py: rules over what the judge is shown). A headline
the model never gets right is replaced by its summary's own words, marked `extractive`.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import Settings
from assets.components.llm_step import LlmStep, project_step, project_step_folder, render_item
from resources import ModelResource
from resources.guardrails.answer_rules import broken_rules
from resources.tables import WAREHOUSE
from tests.conftest import materialization_metadata, warehouse_rows
from tests.fake_openai import FakeOpenAI, data_block

pytestmark = pytest.mark.integration  # Dagster runs against the fake server, and one on the embedded model

SUMMARIES = [
    {
        "topic": "Northwind Robotics",
        "summary": "Northwind Robotics raised 40 million euros in a Series C round in March 2026. "
        "It will expand its factory in Tartu to build more Tern warehouse robots.",
    },
    {
        "topic": "Helios Grid",
        "summary": "Helios Grid opened its solar plant near Seville in June 2026, three months later than planned. "
        "The plant supplies about 60,000 homes.",
    },
]
ECHO = "At most 80 characters, stating the summary's main fact and nothing the summary"


def materialize_headlines(
    step: LlmStep, settings: Settings, model: ModelResource | None = None, summaries: list[dict[str, str]] = SUMMARIES
) -> dg.ExecuteInProcessResult:
    """The step and its checks, materialized from a `summaries` table of the given rows."""

    @dg.asset(name="summaries", io_manager_key=WAREHOUSE)
    def summaries_table() -> pd.DataFrame:
        return pd.DataFrame(summaries)

    resources = build_resources(settings)
    return dg.materialize(
        [summaries_table, step.build_asset(), *(step.build_check(c) for c in step.checks)],
        resources={"model": model or resources["model"], WAREHOUSE: resources[WAREHOUSE]},
        raise_on_error=False,
    )


def check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def headline_rows(settings: Settings) -> dict[str, dict[str, Any]]:
    return {r["topic"]: r for r in warehouse_rows(settings, "summary_headlines")}


def rule_breaks(step: LlmStep, row: dict[str, Any]) -> list[str]:
    """What the step's rules find wrong with a stored row, held to its own summary and prompt."""
    [item] = [s for s in SUMMARIES if s["topic"] == row["topic"]]
    assert step.verify is not None
    fields, against = step.verify.fields, step.verify.against
    answer = step.answer_model.model_construct(**{f: row[f] for f in fields})
    return broken_rules(answer, fields, render_item(step.prompt_template, item), item[against], against)


def test_a_prompt_echo_is_re_asked_and_never_stored_as_valid(settings: Settings, llm: FakeOpenAI):
    """The writer copies the prompt's instructions for one topic however often it is asked, and
    for the other only until it is told why that answer is invalid."""
    step = project_step("summary_headlines")

    def writer(messages: list[dict[str, str]]) -> dict[str, Any]:
        topic = (data_block(messages, "topic") or "").strip()
        told = any("copies the prompt's instructions" in str(m.get("content")) for m in messages[1:])
        if topic == "Helios Grid" and told:
            return {
                "headline": "Helios Grid opens its Seville solar plant three months late",
                "meta_description": "The plant near Seville supplies about 60,000 homes.",
                "keywords": ["Helios Grid"],
            }
        return {"headline": ECHO, "meta_description": "A summary.", "keywords": ["news"]}

    llm.scripts["SummaryHeadlinesAnswer"] = writer
    result = materialize_headlines(step, settings)

    rows = headline_rows(settings)
    echoed = rows["Northwind Robotics"]
    # Not the model's answer: its summary's own words stand in, and they break no rule.
    assert echoed["status"] == "extractive" and rule_breaks(step, echoed) == []
    assert SUMMARIES[0]["summary"].startswith(echoed["headline"])
    assert "headline copies the prompt's instructions" in echoed["error"], echoed["error"]
    assert "at most 80 characters stating the summary s main fact" in echoed["error"]
    repaired = rows["Helios Grid"]
    assert repaired["status"] == "valid" and repaired["headline"].startswith("Helios Grid opens")
    # Asked once and re-asked twice (the gateway's max_reasks) for the echo that never went away.
    writes = [c for c in llm.calls if c["schema"] == "SummaryHeadlinesAnswer"]
    northwind = [c for c in writes if "<topic>\nNorthwind Robotics\n</topic>" in c["messages"][0]["content"]]
    assert len(northwind) == 3 and len(writes) == 5
    validity = check(result, "schema_validity")
    assert "2 of 2 answers publishable (1 model-written, 1 extractive stand-ins" in validity.description
    assert all(ECHO not in str(r["headline"]) for r in rows.values())


def test_a_headline_stating_what_its_summary_lacks_is_replaced_and_the_reason_kept(settings: Settings, llm: FakeOpenAI):
    step = project_step("summary_headlines")
    llm.scripts["SummaryHeadlinesAnswer"] = lambda messages: {
        "headline": f"{(data_block(messages, 'topic') or '').strip()} wins 75 million euro deal with Siemens",
        "meta_description": "A deal signed in 2025.",
        "keywords": ["deal"],
    }
    result = materialize_headlines(step, settings)

    rows = headline_rows(settings)
    assert all(r["status"] == "extractive" and rule_breaks(step, r) == [] for r in rows.values())
    assert all("Siemens" not in r["headline"] and "2025" not in r["meta_description"] for r in rows.values())
    error = rows["Helios Grid"]["error"]
    assert "headline states number 75, name siemens, which the summary does not" in error, error
    assert "meta_description states date 2025, which the summary does not" in error, error
    assert check(result, "schema_validity").metadata["model_written"].value == 0


def test_headlines_that_always_echo_the_prompt_are_all_stood_in_for_by_their_summaries(
    settings: Settings, llm: FakeOpenAI
):
    """A writer that echoes its instructions on every ask: each row takes its summary's lead,
    cut at a word within the headline's 80 characters, and the blocking check passes while
    its metadata shows that the model wrote none of it."""
    step = project_step("summary_headlines")
    llm.scripts["SummaryHeadlinesAnswer"] = lambda messages: {
        "headline": ECHO,
        "meta_description": "From the summary alone, for search results, at most 150 characters.",
        "keywords": ["keywords"],
    }
    result = materialize_headlines(step, settings)

    rows = headline_rows(settings)
    assert len(rows) == len(SUMMARIES)
    for item in SUMMARIES:
        row = rows[item["topic"]]
        assert row["status"] == "extractive" and "copies the prompt's instructions" in row["error"]
        assert rule_breaks(step, row) == []
        headline, lead = row["headline"], item["summary"].split(". ")[0] + "."
        assert 0 < len(headline) <= 80 and lead.startswith(headline)
        assert len(headline) == len(lead) or lead[len(headline)] == " "  # cut between words
        assert not {"characters", "stating", "summary"} & set(headline.lower().split())
        keywords = json.loads(row["keywords"])  # the warehouse stores a list as JSON
        assert item["topic"] in keywords and 1 <= len(keywords) <= 4
    # Helios Grid's lead is 95 characters: cut, and not on "than" or a comma.
    assert (
        rows["Helios Grid"]["headline"]
        == "Helios Grid opened its solar plant near Seville in June 2026, three months later"
    )
    validity = check(result, "schema_validity")
    assert validity.passed and validity.metadata["model_written"].value == 0
    assert validity.metadata["extractive"].value == len(SUMMARIES)
    assert "2 of 2 answers publishable (0 model-written, 2 extractive stand-ins" in validity.description
    assert materialization_metadata(result, "summary_headlines")["extractive"] == len(SUMMARIES)


def test_a_capable_judge_proves_itself_and_fails_a_bad_headline(settings: Settings, llm: FakeOpenAI):
    """The fake judge tells the shipped labelled examples apart, so its verdicts count: the
    question it is shown for one topic fails the rubric, and so does the check."""
    step = project_step("summary_headlines")

    def writer(messages: list[dict[str, str]]) -> dict[str, Any]:
        topic = (data_block(messages, "topic") or "").strip()
        if topic == "Helios Grid":
            headline = "Will Helios Grid power more homes?"
        else:
            headline = "Northwind Robotics raises 40 million euros to expand its Tartu factory"
        return {"headline": headline, "meta_description": f"{topic} in the news.", "keywords": [topic]}

    llm.scripts["SummaryHeadlinesAnswer"] = writer
    result = materialize_headlines(step, settings)

    rows = headline_rows(settings)
    assert all(r["status"] == "valid" for r in rows.values())  # no rule breaks: only a judge can tell
    assert rows["Northwind Robotics"]["rubric_verdict"] == "passed"
    assert rows["Helios Grid"]["rubric_verdict"] == "failed"
    assert "question" in rows["Helios Grid"]["rubric_reason"]
    rubric = check(result, "rubric")
    examples = len(step.examples(step.rubric_check))  # type: ignore[arg-type]
    assert not rubric.passed and rubric.metadata["verdict"].value == "judged"
    assert rubric.metadata["judge_balanced_accuracy"].value == 1.0 >= rubric.metadata["min_judge_accuracy"].value
    assert rubric.metadata["judge_calibration_examples"].value == examples
    assert "1 of 2 answers meet the rubric" in rubric.description
    assert "Helios Grid" in rubric.metadata["not_passed"].value
    # The examples were scored once, before the answers; the check found that measurement stored.
    assert llm.calls_for("RubricVerdict") == examples + len(rows)
    figures = materialization_metadata(result, "summary_headlines")
    assert figures["judge_calibration_requests"] == examples and figures["judge_proven"] is True
    assert figures["rubric_passed"] == figures["rubric_failed"] == 1

    # Measured once per judge configuration: on the next run of the same judge, new answers are
    # judged, the examples are not scored again (a judge that changed behind an unchanged
    # configuration would not be noticed; a new model name, endpoint or rubric is a new judge).
    llm.calls.clear()
    llm.scripts["SummaryHeadlinesAnswer"] = lambda messages: {
        "headline": f"{(data_block(messages, 'topic') or '').strip()} opens a new chapter",
        "meta_description": "News of the week.",
        "keywords": ["news"],
    }
    updated = [{**row, "summary": row["summary"] + " More news is expected."} for row in SUMMARIES]
    again = materialize_headlines(step, settings, summaries=updated)
    assert check(again, "rubric").metadata["judge_balanced_accuracy"].value == 1.0
    assert materialization_metadata(again, "summary_headlines")["judge_calibration_requests"] == 0
    assert llm.calls_for("SummaryHeadlinesAnswer") == llm.calls_for("RubricVerdict") == len(updated)


def test_a_judge_that_cannot_tell_good_from_bad_leaves_every_answer_unjudged(settings: Settings, llm: FakeOpenAI):
    """A judge that passes everything scores 0.5: the check does not pass, and no row says passed."""
    step = project_step("summary_headlines")
    llm.scripts["RubricVerdict"] = lambda messages: {"passed": True, "reason": "looks fine"}
    result = materialize_headlines(step, settings)

    rows = headline_rows(settings)
    assert rows and all(r["status"] == "valid" and r["rubric_verdict"] == "unjudged" for r in rows.values())
    rubric = check(result, "rubric")
    assert not rubric.passed and rubric.severity == dg.AssetCheckSeverity.WARN
    assert rubric.metadata["verdict"].value == "unjudged"
    assert rubric.metadata["judge_balanced_accuracy"].value == 0.5
    assert rubric.description.startswith("unjudged: ") and "under the floor of 0.80" in rubric.description
    # An unproven judge is not asked about the real answers at all.
    assert llm.calls_for("RubricVerdict") == len(step.examples(step.rubric_check))  # type: ignore[arg-type]


def small_calibration_step(folder: Path, count: int) -> LlmStep:
    """The project's headline step, its judge calibrated on `count` of its labelled examples
    (half good, half bad: a prompt echo and an invented fact first), to keep a slow judge's run short."""
    shutil.copytree(project_step_folder("summary_headlines"), folder)
    examples = [json.loads(line) for line in (folder / "calibration.jsonl").read_text().splitlines()]
    good = [e for e in examples if e["label"] == "good"][: count // 2]
    bad = [e for e in examples if e["kind"] == "prompt_echo"][:1] + [
        e for e in examples if e["kind"] == "invented_fact"
    ]
    (folder / "calibration.jsonl").write_text("".join(json.dumps(e) + "\n" for e in good + bad[: count // 2]))
    return LlmStep.from_file(folder / "defs.yaml")


def test_the_embedded_135m_judge_is_measured_and_its_rubric_unjudged(settings: Settings, tmp_path: Path):
    """The bundled small model as writer and judge: its balanced accuracy on the labelled
    examples is recorded, and under the floor the rubric check reports `unjudged`."""
    step = small_calibration_step(tmp_path / "summary_headlines", 4)
    model = ModelResource(cache_path=str(tmp_path / "cache.sqlite"), max_concurrency=2)

    result = materialize_headlines(step, settings, model=model, summaries=SUMMARIES[:1])

    rubric = check(result, "rubric")
    accuracy = rubric.metadata["judge_balanced_accuracy"].value
    assert rubric.metadata["judge_calibration_examples"].value == 4
    assert rubric.metadata["judge"].value.startswith("strong:embedded=")
    assert 0.0 <= accuracy < 0.8, accuracy
    assert not rubric.passed and rubric.severity == dg.AssetCheckSeverity.WARN
    assert rubric.metadata["verdict"].value == "unjudged" and f"{accuracy:.2f}" in rubric.description
    rows = headline_rows(settings)
    published = ("valid", "extractive")
    assert all(r["rubric_verdict"] == ("unjudged" if r["status"] in published else "") for r in rows.values())
    assert all(rule_breaks(step, r) == [] for r in rows.values() if r["status"] in published)


def test_a_judge_that_gave_no_answers_is_unjudged_and_measured_again(settings: Settings, llm: FakeOpenAI):
    """Answers that never meet the verdict's schema are no verdicts: the judge is unproven for
    this run, and the measurement is not kept, so the next run measures the judge again."""
    step = project_step("summary_headlines")
    examples = len(step.examples(step.rubric_check))  # type: ignore[arg-type]
    llm.scripts["RubricVerdict"] = lambda messages: {"verdict": "looks fine"}
    first = check(materialize_headlines(step, settings), "rubric")
    assert not first.passed and first.metadata["verdict"].value == "unjudged"
    assert first.metadata["judge_unanswered"].value == examples
    assert f"{examples} got no valid answer" in first.description

    llm.reset()
    second = check(materialize_headlines(step, settings), "rubric")
    assert second.metadata["verdict"].value == "judged" and second.metadata["judge_unanswered"].value == 0
    assert llm.calls_for("RubricVerdict") == examples + len(SUMMARIES)
