"""Per-customer conversation memory that outlives runs, within a context budget.

A reply that ignores what the customer was told last week reads as careless, so each
customer's turns (their tickets, our replies) are kept in the state store: a SQLite
file on one machine, Postgres in production, shared by every run. A prompt cannot
carry a long history, so recall keeps the most recent turns verbatim (a sliding
window) and folds older ones into a running summary, written by a model and stored,
so each older turn is summarized once. Recall reports what it summarized and what it
had to drop (when no summary could be written), so the asset's record shows exactly
what the reply was written with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Sequence

from pydantic import BaseModel

from resources.storage.state_store import StateStore, upsert_sql

_SCHEMA = (
    "create table if not exists conversation_turns (turn_id text primary key, customer_id text, ticket text, "
    "role text, text text, at text);"
    "create table if not exists conversation_summaries (customer_id text primary key, summary text, "
    "covers_until text, turns integer);"
)
_TURN_COLUMNS = ("turn_id", "customer_id", "ticket", "role", "text", "at")


class Turn(BaseModel):
    turn_id: str
    customer_id: str
    ticket: str
    role: Literal["customer", "agent"]
    text: str
    at: str  # ISO-8601; turns are ordered by it

    @property
    def line(self) -> str:
        return f"[{self.at[:10]}] {self.role}: {' '.join(self.text.split())}"


class Recall(BaseModel):
    """What one prompt is given of a customer's history, and what was left out of it verbatim."""

    window: list[Turn] = []
    summary: str = ""
    total_turns: int = 0
    summarized_turns: int = 0
    dropped_turns: int = 0
    history_chars: int = 0

    def text(self) -> str:
        parts = [f"Summary of earlier conversation: {self.summary}"] if self.summary else []
        parts += [turn.line for turn in self.window]
        return "\n".join(parts)


def split_window(turns: Sequence[Turn], budget_chars: int, window_turns: int) -> tuple[list[Turn], list[Turn]]:
    """(older, window): everything when it fits the budget; otherwise at most `window_turns`
    recent turns whose lines fit in half the budget (the rest is the summary's), older first."""
    if sum(len(t.line) + 1 for t in turns) <= budget_chars:
        return [], list(turns)
    window: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        if len(window) >= window_turns or used + len(turn.line) + 1 > budget_chars // 2:
            break
        window.insert(0, turn)
        used += len(turn.line) + 1
    return list(turns[: len(turns) - len(window)]), window


def _upsert_turns(count: int) -> str:
    """`upsert_sql` for `count` turns in one statement (a multi-row insert, which SQLite and Postgres both take)."""
    row = f"({', '.join('?' * len(_TURN_COLUMNS))})"
    updates = ", ".join(f"{c} = excluded.{c}" for c in _TURN_COLUMNS if c != "turn_id")
    return (
        f"insert into conversation_turns ({', '.join(_TURN_COLUMNS)}) values {', '.join([row] * count)} "
        f"on conflict (turn_id) do update set {updates}"
    )


# Turns written by one statement in `remember_many`: 6 columns each, far under SQLite's and
# Postgres's limits on a statement's parameters.
TURNS_PER_STATEMENT = 200


class ConversationMemory:
    def __init__(self, location: str | Path):
        self._db = StateStore(location, _SCHEMA)

    def remember(self, turn: Turn) -> None:
        """Idempotent: a turn id written twice (a re-executed run) is one turn."""
        self.remember_many([turn])

    def remember_many(self, turns: Sequence[Turn]) -> None:
        """`remember` for many turns, a statement (and a durable commit) per `TURNS_PER_STATEMENT`
        rather than per turn: a step that records a run's tickets waited on one commit each.
        A turn id given twice is written once, as its last version (one statement may not
        update a row twice)."""
        latest = list({turn.turn_id: turn for turn in turns}.values())
        for start in range(0, len(latest), TURNS_PER_STATEMENT):
            chunk = latest[start : start + TURNS_PER_STATEMENT]
            self._db.execute(_upsert_turns(len(chunk)), [getattr(turn, c) for turn in chunk for c in _TURN_COLUMNS])

    def turns(self, customer_id: str, exclude_ticket: str = "") -> list[Turn]:
        rows = self._db.fetchall(
            "select turn_id, customer_id, ticket, role, text, at from conversation_turns "
            "where customer_id = ? and ticket != ? order by at, turn_id",
            (customer_id, exclude_ticket),
        )
        return [Turn(**dict(zip(_TURN_COLUMNS, row))) for row in rows]

    def stored_summary(self, customer_id: str) -> tuple[str, str, int]:
        row = self._db.fetchone(
            "select summary, covers_until, turns from conversation_summaries where customer_id = ?", (customer_id,)
        )
        return (row[0], row[1], int(row[2])) if row else ("", "", 0)

    def save_summary(self, customer_id: str, summary: str, covers_until: str, turns: int) -> None:
        self._db.execute(
            upsert_sql("conversation_summaries", ("customer_id", "summary", "covers_until", "turns"), "customer_id"),
            (customer_id, summary, covers_until, turns),
        )

    def recall(
        self,
        customer_id: str,
        budget_chars: int,
        window_turns: int,
        summarize: Callable[[str, list[Turn]], str | None],
        exclude_ticket: str = "",
    ) -> Recall:
        """The window and running summary for one prompt. `summarize(previous, turns)` writes
        a summary that extends `previous` with `turns`, or returns None when it cannot; the
        turns it could not cover are counted as dropped."""
        turns = self.turns(customer_id, exclude_ticket)
        older, window = split_window(turns, budget_chars, window_turns)
        recall = Recall(window=window, total_turns=len(turns), history_chars=sum(len(t.line) + 1 for t in turns))
        if not older:
            return recall
        summary, covers_until, covered = self.stored_summary(customer_id)
        fresh = [t for t in older if t.at > covers_until] if covers_until else older
        if fresh:
            written = summarize(summary, fresh)
            if written:
                summary, covered = written, covered + len(fresh)
                self.save_summary(customer_id, summary, fresh[-1].at, covered)
                fresh = []
        recall.summary = summary
        recall.summarized_turns = len(older) - len(fresh)
        recall.dropped_turns = len(fresh)
        return recall
