"""Citations by number: a model cites the items of a numbered list it was shown.

Drafts cite evidence items and summaries cite claims; in both, a citation of a number not
in the list is a validation error, so the gateway re-asks with the error instead of
letting an unfounded citation through. The list's length differs per request, so the
schema is made per request, keeping the name the provider (and a test script) sees.

The same bounds are written into the JSON schema the provider receives (each citation an
`enum` of 1..count, at least `minimum` sentences), because a grammar-constrained server
(llama.cpp) can then only emit answers within them: the embedded model's answers that broke
them cost a re-ask each, which it rarely passed. A provider that ignores the schema is held
to the same bounds by the validator.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, create_model, model_validator

Answer = TypeVar("Answer", bound=BaseModel)


def citing_within(schema: type[Answer], count: int, *, field: str, items: str, minimum: int = 1) -> type[Answer]:
    """`schema` (a model with `sentences`, each citing numbers in `field`) for one request: at least
    `minimum` sentences (fewer when the list is shorter), each citing only numbers 1..count."""
    least = max(1, min(minimum, count))

    def _cites_listed(answer: Answer) -> Answer:
        sentences = getattr(answer, "sentences")
        if len(sentences) < least:
            raise ValueError(f"write at least {least} sentences, not {len(sentences)}")
        for position, sentence in enumerate(sentences, start=1):
            unknown = [n for n in getattr(sentence, field) if not 1 <= n <= count]
            if unknown:
                raise ValueError(f"sentence {position} cites {unknown}, but the {items} are numbered 1 to {count} only")
        return answer

    class Bounded(schema):  # type: ignore[valid-type, misc]
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return with_citation_bounds(super().model_json_schema(*args, **kwargs), count, field=field, least=least)

    return create_model(  # type: ignore[call-overload, no-any-return]
        schema.__name__,
        __base__=Bounded,
        __validators__={"_cites_listed": model_validator(mode="after")(_cites_listed)},
    )


def with_citation_bounds(json_schema: dict[str, Any], count: int, *, field: str, least: int) -> dict[str, Any]:
    """`json_schema` (of a model with `sentences`) with its citations limited to the numbers 1..count
    and at least `least` sentences, in forms a JSON-schema grammar enforces (`enum`, `minItems`)."""
    sentences = json_schema["properties"]["sentences"]
    sentences["minItems"] = max(sentences.get("minItems", 0), least)
    if count < 1:  # nothing to cite: no answer is valid, and an empty enum would be an unsatisfiable grammar
        return json_schema
    ref = sentences["items"].get("$ref", "")
    sentence = json_schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else sentences["items"]
    sentence["properties"][field]["items"] = {"type": "integer", "enum": list(range(1, count + 1))}
    return json_schema
