"""Citations by number: a model cites the items of a numbered list it was shown.

Drafts cite evidence items and summaries cite claims; in both, a citation of a number not
in the list is a validation error, so the gateway re-asks with the error instead of
letting an unfounded citation through. The list's length differs per request, so the
schema is made per request, keeping the name the provider (and a test script) sees.
"""

from __future__ import annotations

from typing import TypeVar

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

    return create_model(  # type: ignore[call-overload, no-any-return]
        schema.__name__, __base__=schema, __validators__={"_cites_listed": model_validator(mode="after")(_cites_listed)}
    )
