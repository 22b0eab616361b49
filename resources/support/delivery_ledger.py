"""The delivery ledger: each reply goes out exactly once, however often a run is retried or re-executed.

An e-mail cannot be recalled, and Dagster will run a step again after a crash, a retry
or a re-execution. So every send is framed by the ledger, keyed by the reply's stable
Message-ID: claim the message (a row in state "sending"), send it, record the outcome.
The claim is a plain insert on the primary key, so of two runs that race for one
message exactly one gets it.

The crash window is the one place where exactly-once cannot be promised by software: a
process that dies after the server took the message and before the ledger recorded it
leaves a claim with no outcome, and so does a connection lost after the body was sent
and before the server answered. The message may or may not have left. Sending it again
risks a customer getting the same reply twice, which is visible, embarrassing and cannot
be undone; not sending it risks a delayed reply, which a person can fix by looking. So
the in-doubt window is resolved at-most-once: `deliver_once` never sends such a message
again by itself. It reports "in_doubt" and leaves the decision to a person, who checks
the mailbox (or the receiving system, which can also de-duplicate by Message-ID) and
either releases the message for another attempt (`release`) or records it as sent
(`mark_sent`). For the Maildir default the folder itself is the evidence, so an
in-doubt message found there is settled as sent automatically; one not found there is
still left to a person, since another run may be writing it at that moment.

A definite failure (the server refused, the connection was refused) is marked "failed"
and is claimed again by a later run: nothing left, so a retry cannot duplicate.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from resources.mailer import DeliveryError, MailerResource, OutgoingMessage
from resources.storage.state_store import StateStore

LedgerState = Literal["sending", "in_doubt", "sent", "failed"]
UNSETTLED: tuple[LedgerState, ...] = ("sending", "in_doubt")

SCHEMA = """
create table if not exists reply_deliveries (
    message_id text primary key,
    ticket text not null,
    recipient text not null,
    state text not null,
    transport text not null default '',
    detail text not null default '',
    claimed_at text not null,
    sent_at text not null default ''
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class DeliveryRecord(BaseModel):
    """One row of the ledger. `transport` is the one intended at claim time, then the one used."""

    message_id: str
    ticket: str
    recipient: str
    state: LedgerState
    transport: str
    detail: str
    claimed_at: str
    sent_at: str


class DeliveryOutcome(BaseModel):
    """What `deliver_once` did with one message, for the asset's metadata and a person's eyes."""

    message_id: str
    ticket: str
    state: Literal["sent", "already_sent", "in_doubt", "failed"]
    detail: str


class DeliveryLedger:
    """The `reply_deliveries` table, in a SQLite file or the Postgres state database."""

    def __init__(self, location: str | Path):
        self._db = StateStore(location, SCHEMA, durable=True)  # decisions: a commit must be on disk

    def get(self, message_id: str) -> DeliveryRecord | None:
        row = self._db.fetchone(
            f"select {', '.join(DeliveryRecord.model_fields)} from reply_deliveries where message_id = ?", (message_id,)
        )
        return DeliveryRecord(**dict(zip(DeliveryRecord.model_fields, row))) if row else None

    def all(self) -> list[DeliveryRecord]:
        rows = self._db.fetchall(
            f"select {', '.join(DeliveryRecord.model_fields)} from reply_deliveries order by claimed_at"
        )
        return [DeliveryRecord(**dict(zip(DeliveryRecord.model_fields, row))) for row in rows]

    def unsettled(self) -> list[DeliveryRecord]:
        """Claims with no recorded outcome: what a person has to look at."""
        return [record for record in self.all() if record.state in UNSETTLED]

    def claim(self, message_id: str, ticket: str, recipient: str, transport: str) -> bool:
        """Take the right to send `message_id`; False if another run holds it or it was sent.

        A "failed" row is cleared first, so a failed message can be claimed again. The
        insert is the only point of decision: the primary key lets one claim through, and
        the claimant's token in `detail` tells each run whether the row is its own (an
        insert that does nothing on conflict, rather than one that fails, so no database
        is left inside a failed transaction).
        """
        token = f"claimed by {socket.gethostname()} pid {os.getpid()} ({uuid.uuid4().hex[:12]})"
        self._db.execute("delete from reply_deliveries where message_id = ? and state = 'failed'", (message_id,))
        self._db.execute(
            "insert into reply_deliveries (message_id, ticket, recipient, state, transport, detail, claimed_at, sent_at) "
            "values (?, ?, ?, 'sending', ?, ?, ?, '') on conflict (message_id) do nothing",
            (message_id, ticket, recipient, transport, token, _now()),
        )
        record = self.get(message_id)
        return record is not None and record.state == "sending" and record.detail == token

    def mark_sent(self, message_id: str, transport: str, detail: str) -> None:
        self._set(message_id, "sent", transport=transport, detail=detail, sent_at=_now())

    def mark_failed(self, message_id: str, detail: str) -> None:
        self._set(message_id, "failed", detail=detail)

    def mark_in_doubt(self, message_id: str, detail: str) -> None:
        self._set(message_id, "in_doubt", detail=detail)

    def release(self, message_id: str, note: str = "released by a person") -> None:
        """A person's word that an unsettled message did not arrive: the next run may send it again."""
        record = self.get(message_id)
        if record is None or record.state not in UNSETTLED:
            state = record.state if record else "not in the ledger"
            raise ValueError(f"{message_id} is {state}; only a 'sending' or 'in_doubt' message can be released")
        self._set(message_id, "failed", detail=f"{note} ({_now()}); before: {record.detail or record.state}")

    def _set(self, message_id: str, state: LedgerState, **columns: str) -> None:
        assignments = ", ".join(f"{name} = ?" for name in ("state", *columns))
        self._db.execute(
            f"update reply_deliveries set {assignments} where message_id = ?", (state, *columns.values(), message_id)
        )


def deliver_once(
    ledger: DeliveryLedger, mailer: MailerResource, message: OutgoingMessage, ticket: str
) -> DeliveryOutcome:
    """Send `message` unless the ledger shows it sent, being sent, or possibly sent."""
    record = ledger.get(message.message_id)
    if record is None or record.state == "failed":
        if ledger.claim(message.message_id, ticket, message.to_address, mailer.transport):
            return _send_claimed(ledger, mailer, message, ticket)
        record = ledger.get(message.message_id)  # a concurrent run claimed it first
        assert record is not None
    if record.state == "sent":
        detail = f"sent at {record.sent_at} via {record.transport}: {record.detail}"
        return DeliveryOutcome(message_id=message.message_id, ticket=ticket, state="already_sent", detail=detail)
    return _settle_unsettled(ledger, mailer, record, ticket)


def _send_claimed(
    ledger: DeliveryLedger, mailer: MailerResource, message: OutgoingMessage, ticket: str
) -> DeliveryOutcome:
    message_id = message.message_id
    try:
        receipt = mailer.send(message)
    except DeliveryError as exc:
        if exc.maybe_delivered:
            ledger.mark_in_doubt(message_id, exc.detail)
            return DeliveryOutcome(
                message_id=message_id, ticket=ticket, state="in_doubt", detail=_ask_a_person(message_id, exc.detail)
            )
        ledger.mark_failed(message_id, exc.detail)
        return DeliveryOutcome(message_id=message_id, ticket=ticket, state="failed", detail=exc.detail)
    # Anything else raised by `send` leaves the claim "sending": in doubt for the next run, as after a crash.
    ledger.mark_sent(message_id, receipt.transport, receipt.detail)
    return DeliveryOutcome(message_id=message_id, ticket=ticket, state="sent", detail=receipt.detail)


def _settle_unsettled(
    ledger: DeliveryLedger, mailer: MailerResource, record: DeliveryRecord, ticket: str
) -> DeliveryOutcome:
    message_id = record.message_id
    if record.transport == "maildir":
        key = mailer.maildir_key(message_id)
        if key is not None:
            detail = f"{key} in {mailer.maildir_path} (found in the Maildir after an interrupted delivery)"
            ledger.mark_sent(message_id, "maildir", detail)
            return DeliveryOutcome(
                message_id=message_id, ticket=ticket, state="already_sent", detail=f"settled as sent: {detail}"
            )
    if record.state == "sending":
        why = (
            f"{record.detail} at {record.claimed_at}, with no outcome recorded (that run crashed, or is sending it now)"
        )
    else:
        why = record.detail
    return DeliveryOutcome(
        message_id=message_id, ticket=ticket, state="in_doubt", detail=_ask_a_person(message_id, why)
    )


def _ask_a_person(message_id: str, why: str) -> str:
    return (
        f"{why}. It may or may not have been delivered, so it will not be sent again automatically. "
        f"Check the recipient's mailbox or the mail server's log for Message-ID {message_id}: if it arrived, "
        f"record it with ledger.mark_sent({message_id!r}, transport, detail); if not, call "
        f"ledger.release({message_id!r}) and the next run sends it."
    )
