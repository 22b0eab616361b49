"""Orchestrator-worker for tickets that ask several things at once.

One prompt answering four unrelated questions answers the first well and the rest
badly. A planner splits the ticket into self-contained questions, workers answer
each in parallel from help-centre excerpts retrieved for that question alone, and a
synthesizer merges the answers into one reply. Workers are capped: questions past the
cap are folded into the last worker's question rather than dropped, and the record
says so. A worker that fails leaves its question unanswered and the reply goes to a
person, since a reply that skips a question is not an answer.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from pydantic import BaseModel, Field

from resources import ModelCallError, ModelSession
from resources.guardrails.prompt_injection import data_block
from resources.support.reply_refinement import TicketReply
from resources.support.support_desk import SupportDeskResource
from resources.support.triage_prompts import ANSWER_PART, MAX_TOKENS, MERGE, PLAN, user

MAX_PLANNED = 8


class TicketPlan(BaseModel):
    questions: list[Annotated[str, Field(max_length=200)]] = Field(min_length=1, max_length=MAX_PLANNED)


class WorkerAnswer(BaseModel):
    question: str
    reply: str = ""
    cited_articles: list[str] = []
    error: str = ""


class MultiPartReply(BaseModel):
    reply: str = ""
    questions: list[str] = []
    folded: int = Field(default=0, description="Planned questions past the worker cap, folded into the last worker's.")
    workers: list[WorkerAnswer] = []
    error: str = ""


def cap_questions(questions: list[str], max_workers: int) -> tuple[list[str], int]:
    """At most `max_workers` questions; the ones past the cap join the last kept question."""
    questions = [q.strip() for q in questions if q.strip()]
    if len(questions) <= max_workers:
        return questions, 0
    kept = questions[: max_workers - 1] + [" ".join(questions[max_workers - 1 :])]
    return kept, len(questions) - max_workers


def excerpts_block(hits: list) -> str:
    return data_block("context", "\n".join(f"[{h.slug}] {h.title}: {h.excerpt}" for h in hits) or "(no articles found)")


def answer_in_parts(
    ticket_block: str,
    *,
    max_workers: int,
    llm: ModelSession,
    support_desk: SupportDeskResource,
    partition: str,
) -> MultiPartReply:
    try:
        plan = llm.structured(
            user(PLAN.render(ticket=ticket_block, max_parts=max_workers)),
            TicketPlan,
            tier="fast",
            max_tokens=MAX_TOKENS["plan"],
            partition=partition,
        )
    except ModelCallError as exc:
        return MultiPartReply(error=f"planner failed: {exc}"[:300])
    questions, folded = cap_questions(plan.questions, max_workers)

    def work(question: str) -> WorkerAnswer:
        try:
            hits = support_desk.search_help_centre(question, limit=2)
            answer = llm.structured(
                user(ANSWER_PART.render(context=excerpts_block(hits), question=question)),
                TicketReply,
                tier="fast",
                max_tokens=MAX_TOKENS["part"],
                partition=partition,
            )
            return WorkerAnswer(question=question, reply=answer.reply.strip(), cited_articles=answer.cited_articles)
        except Exception as exc:  # a worker's failure is recorded on its question
            return WorkerAnswer(question=question, error=f"{type(exc).__name__}: {exc}"[:300])

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(questions)))) as pool:
        workers = list(pool.map(work, questions))
    result = MultiPartReply(questions=questions, folded=folded, workers=workers)
    if any(w.error for w in workers):
        result.error = "a worker failed: " + "; ".join(w.error for w in workers if w.error)[:300]
        return result
    answers = "\n\n".join(f"Question {i + 1}: {w.question}\nAnswer: {w.reply}" for i, w in enumerate(workers))
    try:
        merged = llm.structured(
            user(MERGE.render(ticket=ticket_block, answers=answers)),
            TicketReply,
            tier="strong",
            max_tokens=MAX_TOKENS["merge"],
            partition=partition,
        )
    except ModelCallError as exc:
        result.error = f"synthesizer failed: {exc}"[:300]
        return result
    result.reply = merged.reply.strip()
    return result
