"""The deterministic rules of a declared step's published fields: no prompt echo, no fact its input lacks.

A headline that repeats the prompt's own instructions ("at most 80 characters, stating the
summary's main fact") or names a figure its summary never states is wrong whatever a judge
says of it. The rules run inside the answer's validation, so the gateway's bounded re-ask
feeds the reason back to the model, and an answer that still breaks them after the re-asks
is stored as invalid, with the reason, where the step's schema check counts it, unless
the step names stand-ins: then its input's own words (resources/verification/stand_ins.py) take the
answer's place, held to the same rules, and the row says `extractive`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError, create_model, model_validator

from resources.verification.publication_rules import find_prompt_echo
from resources.verification.stand_ins import DERIVATIONS, Limits
from resources.verification.stated_facts import unsupported_facts


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


def field_limits(answer: type[BaseModel], field: str) -> tuple[str, Limits]:
    """A field's JSON type (string, array, ...) and the lengths its schema allows, as a stand-in must respect them."""
    spec = answer.model_json_schema()["properties"][field]
    spec = next((s for s in spec.get("anyOf", []) if s.get("type") != "null"), spec)
    if spec.get("type") == "array":
        item = spec.get("items", {})
        return "array", Limits(item.get("maxLength"), spec.get("minItems", 0), spec.get("maxItems"))
    return str(spec.get("type", "")), Limits(spec.get("maxLength"))


def stand_in_answer(
    answer: type[BaseModel],
    derivations: dict[str, str],
    fields: list[str],
    prompt: str,
    evidence: str,
    evidence_name: str,
    fallback: str,
) -> tuple[BaseModel | None, str]:
    """The answer derived from the evidence alone (each field by its named derivation), and ""; or
    None and why it may not stand in: it must meet the answer's schema and break no rule,
    checked here as a model's answer is, never assumed from where its words came from."""
    values = {}
    for field, name in derivations.items():
        derive, _ = DERIVATIONS[name]
        values[field] = derive(evidence, field_limits(answer, field)[1], fallback)
    try:
        stand_in = answer.model_validate(values)
    except ValidationError as exc:
        return None, f"stand-in invalid: {exc.errors()[0]['msg']}"
    problems = broken_rules(stand_in, fields, prompt, evidence, evidence_name)
    return (None, f"stand-in breaks the rules: {'; '.join(problems)}") if problems else (stand_in, "")
