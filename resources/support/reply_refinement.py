"""Refinement: a reply is critiqued against a rubric and revised until it passes, or the cap.

The rubric (answers the question, cites the help centre, follows policy, polite) is
judged by the `fast` tier, and the citation criterion is also checked by code: a
reply passes it only if it names, as "(help centre: <slug>)", an article that was in
its context. A failed round sends the critique's feedback to the `strong` tier for a
revision. Rounds are capped; every round is recorded, and a reply still failing at
the cap goes to a person with the criteria it failed, never out to the customer.
"""

from __future__ import annotations

import re
from typing import Sequence

from pydantic import BaseModel, Field

from resources import Messages, ModelCallError, ModelSession, Tier
from resources.support.triage_prompts import CRITIQUE, MAX_TOKENS, REVISE, user

CITATION = re.compile(r"\(help[ -]?cent(?:re|er):\s*([a-z0-9][a-z0-9-]*)\)", re.IGNORECASE)
CRITERIA = ("answers_question", "cites_help_centre", "follows_policy", "polite")
JUDGE_TIER: Tier = "fast"


class TicketReply(BaseModel):
    """A reply as a model writes it."""

    reply: str = Field(max_length=1500)
    cited_articles: list[str] = Field(default=[], max_length=6)


class RubricCritique(BaseModel):
    answers_question: bool
    cites_help_centre: bool
    follows_policy: bool
    polite: bool
    feedback: str = Field(default="", max_length=240)


class RefinementRound(BaseModel):
    round: int
    failed: list[str] = Field(default=[], description="Rubric criteria the reply failed in this round.")
    feedback: str = ""
    revised: bool = False
    error: str = ""


def cited_slugs(reply: str) -> list[str]:
    return [m.lower() for m in CITATION.findall(reply)]


def critique_request(reply: str, *, ticket_block: str, context_block: str, refund_limit: float) -> Messages:
    """The judge's request for one reply: the same for a real draft and for a labelled example."""
    return user(
        CRITIQUE.render(refund_limit=f"{refund_limit:g}", context=context_block, ticket=ticket_block, reply=reply)
    )


def judged_failed(critique: RubricCritique) -> list[str]:
    """The criteria the judge itself failed (the citation check by code comes on top)."""
    return [c for c in CRITERIA if not getattr(critique, c)]


def failed_criteria(critique: RubricCritique, reply: str, known_slugs: Sequence[str]) -> list[str]:
    """The model's failed criteria, plus the citation check that code can do itself."""
    failed = judged_failed(critique)
    if "cites_help_centre" not in failed and not set(cited_slugs(reply)) & set(known_slugs):
        failed.append("cites_help_centre")
    return failed


def refine(
    reply: str,
    *,
    ticket_block: str,
    context_block: str,
    known_slugs: Sequence[str],
    refund_limit: float,
    max_rounds: int,
    llm: ModelSession,
    partition: str,
) -> tuple[str, list[RefinementRound], bool]:
    """(final reply, rounds, passed). At most `max_rounds` revisions, each after a critique."""
    rounds: list[RefinementRound] = []
    for number in range(1, max_rounds + 2):
        request = critique_request(
            reply, ticket_block=ticket_block, context_block=context_block, refund_limit=refund_limit
        )
        try:
            critique = llm.structured(
                request, RubricCritique, tier=JUDGE_TIER, max_tokens=MAX_TOKENS["critique"], partition=partition
            )
        except ModelCallError as exc:
            rounds.append(RefinementRound(round=number, failed=["critique failed"], error=str(exc)[:300]))
            return reply, rounds, False
        failed = failed_criteria(critique, reply, known_slugs)
        this = RefinementRound(round=number, failed=failed, feedback=critique.feedback)
        rounds.append(this)
        if not failed:
            return reply, rounds, True
        if number > max_rounds:
            break
        feedback = critique.feedback or f"The reply fails: {', '.join(failed)}."
        if "cites_help_centre" in failed:
            feedback += (
                f" Cite one of these articles as (help centre: <slug>): {', '.join(known_slugs) or 'none available'}."
            )
        try:
            revised = llm.structured(
                user(REVISE.render(feedback=feedback, context=context_block, ticket=ticket_block, reply=reply)),
                TicketReply,
                tier="strong",
                max_tokens=MAX_TOKENS["reply"],
                partition=partition,
            )
        except ModelCallError as exc:
            this.error = f"revision failed: {exc}"[:300]
            return reply, rounds, False
        reply, this.revised = revised.reply.strip(), True
    return reply, rounds, False
