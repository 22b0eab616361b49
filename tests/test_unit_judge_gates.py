"""The pure parts of the judge gates: balanced accuracy of a judge's verdicts, labelled example
files, and the facts a headline states that its summary does not."""

import json
from pathlib import Path

import pytest

from assets.components.llm_step import project_step, render_item
from resources.guardrails.answer_rules import broken_rules
from resources.verification.judge_calibration import CalibrationFileError, LabelledExample, read_examples, score
from resources.verification.stated_facts import unsupported_facts

pytestmark = pytest.mark.unit

SUMMARY = (
    "Northwind Robotics raised 40 million euros in a Series C round led by Alder Capital in March 2026. "
    "The company will expand its factory in Tartu."
)


def example(label: str, kind: str = "good") -> LabelledExample:
    return LabelledExample(label=label, kind=kind, answer={"headline": "x"})  # type: ignore[arg-type]


def test_balanced_accuracy_gives_a_judge_that_passes_everything_one_half():
    examples = [example("good")] * 3 + [example("bad", "prompt_echo")] * 9
    assert score([(e, True) for e in examples])[2] == 0.5
    assert score([(e, e.good) for e in examples]) == (1.0, 1.0, 1.0, [])
    # No answer is no verdict: it counts as misjudged, whatever the label.
    good_passed, bad_failed, accuracy, misjudged = score([(e, None if e.good else False) for e in examples])
    assert (good_passed, bad_failed, accuracy) == (0.0, 1.0, 0.5) and misjudged == ["good/good"] * 3


def test_a_labelled_examples_file_names_its_bad_line(tmp_path: Path):
    path = tmp_path / "calibration.jsonl"
    good = {"label": "good", "kind": "good", "answer": {"headline": "Northwind raises 40 million euros"}}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "label": "fine"}) + "\n")
    with pytest.raises(CalibrationFileError, match=rf"{path}:2: label: "):
        read_examples(path)
    path.write_text(json.dumps(good) + "\n")
    with pytest.raises(CalibrationFileError, match="needs both good and bad examples"):
        read_examples(path)


@pytest.mark.parametrize(
    "text, missing",
    [
        ("Northwind Robotics Raises 40 Million Euros in Series C", []),  # title case, other word forms
        ("Alder Capital leads Northwind's Series C round", []),
        ("Northwind raises 45 million euros", ["number 45"]),
        ("Northwind Robotics raises money from Zephyr Partners", ["name partners", "name zephyr"]),
        ("Northwind Robotics expands in Tartu in 2025", ["date 2025"]),
        ("Northwind Robotics to expand in June", ["date june"]),
    ],
)
def test_a_headline_may_state_only_the_numbers_dates_and_names_of_its_summary(text: str, missing: list[str]):
    assert unsupported_facts(text, SUMMARY) == missing


def test_the_shipped_good_headlines_keep_to_the_rules_and_the_echoes_and_inventions_do_not():
    """The labelled examples that ship with the headline step agree with its deterministic rules:
    every good answer keeps to them; every prompt echo and invented fact breaks one."""
    step = project_step("summary_headlines")
    assert step.rubric_check is not None and step.verify is not None
    for labelled in step.examples(step.rubric_check):
        answer = step.answer_model.model_validate(labelled.answer)
        prompt = render_item(step.prompt_template, labelled.item)
        broken = broken_rules(answer, step.verify.fields, prompt, labelled.item["summary"], "summary")
        if labelled.good:
            assert broken == [], (labelled.answer, broken)
        elif labelled.kind in ("prompt_echo", "invented_fact"):
            assert broken, labelled.answer
