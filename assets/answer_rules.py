"""The deterministic rules of a declared step's published fields: no prompt echo, no fact its input lacks.

A headline that repeats the prompt's own instructions ("at most 80 characters, stating the
summary's main fact") or names a figure its summary never states is wrong whatever a judge
says of it. The rules run inside the answer's validation, so the gateway's bounded re-ask
feeds the reason back to the model, and an answer that still breaks them after the re-asks
is stored as invalid, with the reason, where the step's schema check counts it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, create_model, model_validator

from resources.publication_rules import find_prompt_echo
from resources.stated_facts import unsupported_facts


def broken_rules(answer: BaseModel, fields: list[str], prompt: str, evidence: str, evidence_name: str) -> list[str]:
    """Why each published field may not be published, one reason per broken rule."""
    problems = []
    for field in fields:
        value = getattr(answer, field, None)
        if not isinstance(value, str) or not value.strip():
            continue
        echo = find_prompt_echo(value, prompt, evidence)
        if echo:
            problems.append(f"{field} copies the prompt's instructions ({echo!r}): write it from the {evidence_name}")
        missing = unsupported_facts(value, evidence)
        if missing:
            problems.append(f"{field} states {', '.join(missing)}, which the {evidence_name} does not")
    return problems


def verified_answer_model(
    answer: type[BaseModel], fields: list[str], prompt: str, evidence: str, evidence_name: str
) -> type[BaseModel]:
    """The answer's model for one item, its published fields held to that item's prompt and
    evidence. It keeps the answer model's name and JSON schema, so the request (and what an
    endpoint sees of it) is unchanged; only what validates is stricter."""

    def hold_to_rules(self: Any) -> Any:
        problems = broken_rules(self, fields, prompt, evidence, evidence_name)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    return create_model(
        answer.__name__,
        __base__=answer,
        __validators__={"hold_to_rules": model_validator(mode="after")(hold_to_rules)},  # type: ignore[dict-item]
    )
