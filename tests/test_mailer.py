"""Exactly-once delivery of replies, judged where the messages land: a real SMTP server on
127.0.0.1 (tests/smtp_server.py) and a real Maildir folder, counted by Message-ID."""

from __future__ import annotations

import base64
import mailbox
import threading
from collections import Counter
from pathlib import Path

import pytest
from dagster import EnvVar
from pydantic import ValidationError

from resources.mailer import DeliveryError, MailerResource, OutgoingMessage, reply_message_id
from resources.support.delivery_ledger import DeliveryLedger, DeliveryOutcome, deliver_once
from tests.smtp_server import SmtpTestServer

# Tiers, marked per test: Maildir and message checks are unit; whatever talks to the SMTP test server, integration.

PASSWORD = "s3cret-smtp-passw0rd"


@pytest.fixture
def ledger(tmp_path: Path) -> DeliveryLedger:
    return DeliveryLedger(tmp_path / "state" / "deliveries.sqlite")


def smtp_mailer(server: SmtpTestServer, **fields) -> MailerResource:
    return MailerResource(smtp_host=server.host, smtp_port=server.port, smtp_timeout_seconds=5, **fields)


def reply(ticket: str, version: int = 1) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=reply_message_id(ticket, version),
        to_address=f"Customer {ticket} <customer-{ticket.lower()}@example.com>",
        subject=f"Re: [{ticket}] Sync stopped working",
        body=f"Hello,\n\nthanks for writing about {ticket}.\n.\nA line with only a dot, kept as text.\n",
        in_reply_to=f"<{ticket}@customer.example>",
        headers={"X-Ticket": ticket},
    )


def crash_after_sending(ledger: DeliveryLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run dies after the transport took the message and before the ledger recorded it."""

    def die(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed between send and record")

    monkeypatch.setattr(ledger, "mark_sent", die)


@pytest.mark.integration
def test_message_arrives_with_its_message_id(smtp_server: SmtpTestServer) -> None:
    receipt = smtp_mailer(smtp_server).send(reply("T-100"))

    [received] = smtp_server.received
    assert received.message_id == "<reply-T-100-1@ai-pipelines.local>" == receipt.message_id
    assert received.mail_from == "support@lumen-notes.example"
    assert received.rcpt_tos == ["customer-t-100@example.com"]
    assert b"In-Reply-To: <T-100@customer.example>" in received.raw
    assert b"X-Ticket: T-100" in received.raw
    assert receipt.transport == "smtp"
    assert receipt.detail == f"127.0.0.1:{smtp_server.port} 250 2.0.0 Ok: queued as TEST0001"


@pytest.mark.integration
def test_login_with_password_from_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", PASSWORD)
    with SmtpTestServer(username="pipeline", password=PASSWORD) as server:
        mailer = smtp_mailer(server, smtp_username="pipeline", smtp_password=EnvVar("TEST_SMTP_PASSWORD"))
        mailer.send(reply("T-101"))
        assert server.message_ids() == ["<reply-T-101-1@ai-pipelines.local>"]


@pytest.mark.integration
def test_deliver_once_twice_sends_once(smtp_server: SmtpTestServer, ledger: DeliveryLedger) -> None:
    mailer = smtp_mailer(smtp_server)
    first = deliver_once(ledger, mailer, reply("T-1"), ticket="T-1")
    second = deliver_once(ledger, mailer, reply("T-1"), ticket="T-1")

    assert (first.state, second.state) == ("sent", "already_sent")
    assert smtp_server.message_ids() == ["<reply-T-1-1@ai-pipelines.local>"]
    record = ledger.get(reply("T-1").message_id)
    assert record is not None and record.state == "sent" and "queued as TEST0001" in record.detail


@pytest.mark.integration
def test_crash_between_send_and_record_is_in_doubt_and_not_resent(
    smtp_server: SmtpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = tmp_path / "deliveries.sqlite"
    mailer = smtp_mailer(smtp_server)
    crashed = DeliveryLedger(location)
    crash_after_sending(crashed, monkeypatch)
    with pytest.raises(SystemExit):
        deliver_once(crashed, mailer, reply("T-2"), ticket="T-2")

    rerun = deliver_once(DeliveryLedger(location), mailer, reply("T-2"), ticket="T-2")  # a re-executed run

    assert rerun.state == "in_doubt"
    assert "ledger.release('<reply-T-2-1@ai-pipelines.local>')" in rerun.detail
    assert "Check the recipient's mailbox" in rerun.detail
    assert smtp_server.message_ids() == ["<reply-T-2-1@ai-pipelines.local>"]  # once, not twice


@pytest.mark.integration
def test_release_then_resend(smtp_server: SmtpTestServer, ledger: DeliveryLedger) -> None:
    message = reply("T-3")
    ledger.claim(message.message_id, "T-3", message.to_address, "smtp")  # a run died before it sent anything
    mailer = smtp_mailer(smtp_server)

    assert deliver_once(ledger, mailer, message, ticket="T-3").state == "in_doubt"
    assert smtp_server.message_ids() == []

    ledger.release(message.message_id)  # a person found nothing in the mailbox
    assert deliver_once(ledger, mailer, message, ticket="T-3").state == "sent"
    assert deliver_once(ledger, mailer, message, ticket="T-3").state == "already_sent"
    assert smtp_server.message_ids() == [message.message_id]
    with pytest.raises(ValueError, match="sent"):
        ledger.release(message.message_id)  # a sent reply cannot be released for a second send


@pytest.mark.integration
def test_451_mid_batch_fails_that_message_and_a_rerun_sends_only_the_missing(
    smtp_server: SmtpTestServer, ledger: DeliveryLedger
) -> None:
    mailer = smtp_mailer(smtp_server)
    batch = [reply(f"T-{n}") for n in range(10, 15)]
    smtp_server.fail_data(3, "reject")

    def run() -> list[DeliveryOutcome]:
        return [deliver_once(ledger, mailer, message, ticket=f"T-{n}") for n, message in zip(range(10, 15), batch)]

    first = run()
    assert [o.state for o in first] == ["sent", "sent", "failed", "sent", "sent"]
    assert f"127.0.0.1:{smtp_server.port}" in first[2].detail and "451 4.3.0" in first[2].detail
    record = ledger.get(batch[2].message_id)
    assert record is not None and record.state == "failed"

    second = run()
    assert [o.state for o in second] == ["already_sent", "already_sent", "sent", "already_sent", "already_sent"]
    third = run()
    assert {o.state for o in third} == {"already_sent"}

    arrived = Counter(smtp_server.message_ids())
    assert arrived == Counter(m.message_id for m in batch)  # every reply exactly once
    assert smtp_server.data_commands == 6  # five sent plus the one refused: no other attempt


@pytest.mark.integration
def test_connection_lost_after_data_is_in_doubt_and_not_resent(
    smtp_server: SmtpTestServer, ledger: DeliveryLedger
) -> None:
    mailer = smtp_mailer(smtp_server)
    smtp_server.fail_data(1, "drop")  # the server keeps the message but the answer never comes

    first = deliver_once(ledger, mailer, reply("T-4"), ticket="T-4")
    again = deliver_once(ledger, mailer, reply("T-4"), ticket="T-4")

    assert (first.state, again.state) == ("in_doubt", "in_doubt")
    assert "connection lost after the message was sent" in first.detail
    record = ledger.get(reply("T-4").message_id)
    assert record is not None and record.state == "in_doubt"
    assert smtp_server.message_ids() == ["<reply-T-4-1@ai-pipelines.local>"]


@pytest.mark.integration
def test_refused_connection_is_a_definite_failure_and_retried_later(ledger: DeliveryLedger) -> None:
    with SmtpTestServer() as server:
        port = server.port
    mailer = MailerResource(smtp_host="127.0.0.1", smtp_port=port, smtp_timeout_seconds=2)

    with pytest.raises(DeliveryError) as error:
        mailer.send(reply("T-5"))
    assert f"127.0.0.1:{port}" in str(error.value) and not error.value.maybe_delivered

    assert deliver_once(ledger, mailer, reply("T-5"), ticket="T-5").state == "failed"
    with SmtpTestServer() as server:  # the server is back (on another port) for the next run
        assert deliver_once(ledger, smtp_mailer(server), reply("T-5"), ticket="T-5").state == "sent"
        assert server.message_ids() == [reply("T-5").message_id]


@pytest.mark.integration
def test_concurrent_runs_cannot_both_claim(smtp_server: SmtpTestServer, tmp_path: Path) -> None:
    location = tmp_path / "deliveries.sqlite"
    DeliveryLedger(location)  # the table exists before the race
    mailer = smtp_mailer(smtp_server)
    start = threading.Barrier(8)
    states: list[str] = []

    def run() -> None:
        ledger = DeliveryLedger(location)  # a connection of its own, as another process would have
        start.wait()
        states.append(deliver_once(ledger, mailer, reply("T-6"), ticket="T-6").state)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert states.count("sent") == 1
    assert set(states) <= {"sent", "already_sent", "in_doubt"}
    assert smtp_server.message_ids() == [reply("T-6").message_id]


@pytest.mark.unit
def test_maildir_default_writes_once(tmp_path: Path, ledger: DeliveryLedger) -> None:
    outbox = tmp_path / "outbox"
    mailer = MailerResource(maildir_path=str(outbox))
    assert mailer.transport == "maildir"

    first = deliver_once(ledger, mailer, reply("T-7"), ticket="T-7")
    second = deliver_once(ledger, mailer, reply("T-7"), ticket="T-7")
    direct = mailer.send(reply("T-7"))  # even past the ledger, the folder refuses a second copy

    assert (first.state, second.state) == ("sent", "already_sent")
    assert direct.duplicate
    box = mailbox.Maildir(outbox, create=False)
    assert [m["Message-ID"] for m in box] == ["<reply-T-7-1@ai-pipelines.local>"]
    assert mailer.already_in_maildir("<reply-T-7-1@ai-pipelines.local>")
    assert not mailer.already_in_maildir("<reply-T-8-1@ai-pipelines.local>")
    # another process's mailer (no memory of its own) finds it from the headers
    assert MailerResource(maildir_path=str(outbox)).maildir_key(reply("T-7").message_id) == direct.detail.split()[0]


@pytest.mark.unit
def test_maildir_in_doubt_settles_as_sent_when_the_file_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, outbox = tmp_path / "deliveries.sqlite", tmp_path / "outbox"
    crashed = DeliveryLedger(location)
    crash_after_sending(crashed, monkeypatch)
    with pytest.raises(SystemExit):
        deliver_once(crashed, MailerResource(maildir_path=str(outbox)), reply("T-8"), ticket="T-8")

    ledger = DeliveryLedger(location)
    settled = deliver_once(ledger, MailerResource(maildir_path=str(outbox)), reply("T-8"), ticket="T-8")

    assert settled.state == "already_sent" and settled.detail.startswith("settled as sent")
    record = ledger.get(reply("T-8").message_id)
    assert record is not None and record.state == "sent"
    assert len(mailbox.Maildir(outbox, create=False)) == 1


@pytest.mark.unit
def test_maildir_in_doubt_without_the_file_waits_for_a_person(tmp_path: Path, ledger: DeliveryLedger) -> None:
    outbox = tmp_path / "outbox"
    message = reply("T-9")
    ledger.claim(message.message_id, "T-9", message.to_address, "maildir")  # died before writing, or writing now

    outcome = deliver_once(ledger, MailerResource(maildir_path=str(outbox)), message, ticket="T-9")

    assert outcome.state == "in_doubt"
    assert len(mailbox.Maildir(outbox, create=True)) == 0


@pytest.mark.integration
def test_password_never_appears_in_a_delivery_error(ledger: DeliveryLedger) -> None:
    secrets = [
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0pipeline\0{PASSWORD}".encode()).decode(),
    ]
    with SmtpTestServer(username="pipeline", password=PASSWORD, password_echo=True) as server:
        mailer = smtp_mailer(server, smtp_username="pipeline", smtp_password=PASSWORD)
        with pytest.raises(DeliveryError) as error:
            mailer.send(reply("T-11"))
        outcome = deliver_once(ledger, mailer, reply("T-11"), ticket="T-11")

    text = str(error.value)
    assert "535 5.7.8 Bad credentials pipeline:[redacted]" in text  # the server did echo it
    assert error.value.__cause__ is None and error.value.__context__ is None  # the original, unredacted, is not kept
    record = ledger.get(reply("T-11").message_id)
    assert outcome.state == "failed" and record is not None
    for where in (text, repr(error.value), outcome.detail, record.detail):
        assert not any(secret in where for secret in secrets)


@pytest.mark.unit
def test_messages_that_could_inject_headers_are_refused() -> None:
    with pytest.raises(ValidationError, match="line breaks"):
        OutgoingMessage.model_validate({**reply("T-12").model_dump(), "subject": "Hi\r\nBcc: x@evil.example"})
    with pytest.raises(ValidationError, match="set from the message's own fields"):
        OutgoingMessage.model_validate({**reply("T-12").model_dump(), "headers": {"Message-ID": "<other@x>"}})
    with pytest.raises(ValidationError, match="Message-ID"):
        OutgoingMessage.model_validate({**reply("T-12").model_dump(), "message_id": "reply-T-12"})
    with pytest.raises(ValueError):
        reply_message_id("ticket with spaces", 1)
