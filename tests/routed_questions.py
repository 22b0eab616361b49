"""The items a learned router is tested and benchmarked on: questions, half easy and half hard,
answered by a YAML step, and a test server whose fast model fails the hard ones (an answer
outside the step's schema) while its strong model answers every one.

Shared by tests/test_learned_routing.py and bench/learned_routing.py, so that what the tests
hold the router to and what the benchmark measures are the same step on the same items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assets.components.llm_step import LlmStep
from tests.fake_openai import FakeOpenAI, data_block

FAST, STRONG = "fast-model", "strong-model"
ASSET = "routed_labels"
ANSWER = "RoutedLabelsAnswer"  # the schema name the step's JSON Schema answer gets
ROUTING = "  routing: {target: 0.9, explore: 0.1, route_by: kind}"
# The step, with `how` it picks its tier: `  tier: fast`, or ROUTING (and any checks after it).
STEP = """\
type: assets.components.llm_step.LlmStep
attributes:
  asset: routed_labels
  group: routing
  inputs: [questions]
  key: item
  prompt: prompt.txt
  output_schema:
    type: object
    properties:
      label: {{type: string, enum: [agree, disagree]}}
      note: {{type: string, maxLength: 60}}
{how}
"""
PROMPT = "Answer the question: agree or disagree.\n<question>\n{question}\n</question>\n"


def questions(count: int) -> list[dict[str, str]]:
    """`count` questions, easy and hard in turn; `kind` is the column the router learns by."""
    kinds = ("easy", "hard")
    return [
        {"item": f"q{i:04d}", "kind": kinds[i % 2], "question": f"Is {kinds[i % 2]} question {i} answered?"}
        for i in range(count)
    ]


def answer_well(messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"label": "agree", "note": (data_block(messages, "question") or "")[:60]}


def fail_hard(messages: list[dict[str, str]]) -> dict[str, Any]:
    """The fast model: right on easy questions, an answer outside the schema on hard ones."""
    hard = "hard question" in (data_block(messages, "question") or "")
    return {"label": "perhaps", "note": "unsure"} if hard else answer_well(messages)


def script(server: FakeOpenAI) -> None:
    """The server's fast model fails hard questions; its strong model answers every one."""
    server.model_scripts[(ANSWER, FAST)] = fail_hard
    server.model_scripts[(ANSWER, STRONG)] = answer_well


def routed_step(folder: Path, how: str = ROUTING) -> LlmStep:
    """The step declared in `folder`, its tier chosen as `how` says."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.yaml").write_text(STEP.format(how=how))
    (folder / "prompt.txt").write_text(PROMPT)
    return LlmStep.from_file(folder / "defs.yaml")
