"""The mailer: sends one e-mail per call, over SMTP or, by default, into a local Maildir folder.

Sending a reply is the one act of the support pipeline that cannot be undone, so the
mailer gives the exactly-once protocol (`resources/support/delivery_ledger.py`) three things it
cannot get anywhere else:

- The caller chooses the Message-ID and it goes out unchanged. The mailer never calls
  `email.utils.make_msgid`: that adds a random part on every call, so two copies of one
  reply would look like two different messages to the receiving system. With a stable id,
  a retry after an unclear failure can be recognised as a duplicate downstream, and the
  ledger can use the id as its key.
- A `DeliveryError` says whether the message may have left. A refusal (a 4xx or 5xx
  reply, a refused connection) means it certainly did not. A connection lost after the
  message body went out means the server may have queued it; `maybe_delivered` is then
  True and nobody should resend it automatically.
- In the Maildir default, the folder itself shows what was delivered: `maildir_key`
  finds a message by its Message-ID header, and `send` does not write an id that is
  already there (across processes, the ledger's claim keeps two writers apart).

Error text never holds the SMTP password: servers sometimes echo what they were sent,
so every message passes through `redact` (with the base64 forms AUTH sends) before it is
raised.
"""

from __future__ import annotations

import base64
import mailbox
import re
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import formatdate, parseaddr
from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator

from resources.secrets import redact, reveal

Transport = Literal["smtp", "maildir"]
SmtpSecurity = Literal["none", "starttls", "ssl"]

# RFC 5322 msg-id: "<" id-left "@" id-right ">", with no spaces or angle brackets inside.
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ":" (RFC 5322 field-name)
# Headers the mailer sets from the message's own fields; `headers` cannot override them.
RESERVED_HEADERS = frozenset({"message-id", "from", "to", "subject", "date", "in-reply-to"})


def reply_message_id(ticket_id: str, version: int | str, domain: str = "ai-pipelines.local") -> str:
    """The stable Message-ID of one version of the reply to one ticket."""
    message_id = f"<reply-{ticket_id}-{version}@{domain}>"
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"cannot build a Message-ID from ticket {ticket_id!r}, version {version!r}, domain {domain!r}")
    return message_id


def _no_line_breaks(value: str, field: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{field} must not contain line breaks (header injection)")
    return value


class OutgoingMessage(BaseModel):
    """One e-mail to send. `message_id` is the caller's stable id, e.g. `reply_message_id(ticket, version)`."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    to_address: str
    from_address: str = ""  # empty: the mailer's `sender`
    subject: str
    body: str
    in_reply_to: str = ""  # the customer's Message-ID, so the reply joins their thread
    headers: dict[str, str] = {}

    @field_validator("message_id")
    @classmethod
    def _valid_message_id(cls, value: str) -> str:
        if not _MESSAGE_ID.fullmatch(value):
            raise ValueError(f"not a Message-ID of the form <left@right>: {value!r}")
        return value

    @field_validator("in_reply_to")
    @classmethod
    def _valid_in_reply_to(cls, value: str) -> str:
        if value and not _MESSAGE_ID.fullmatch(value):
            raise ValueError(f"not a Message-ID of the form <left@right>: {value!r}")
        return value

    @field_validator("to_address", "from_address")
    @classmethod
    def _valid_address(cls, value: str, info: ValidationInfo) -> str:
        field = info.field_name or "address"
        _no_line_breaks(value, field)
        if value and "@" not in parseaddr(value)[1]:
            raise ValueError(f"{field} is not an e-mail address: {value!r}")
        if field == "to_address" and not value:
            raise ValueError("to_address is required")
        return value

    @field_validator("subject")
    @classmethod
    def _valid_subject(cls, value: str) -> str:
        return _no_line_breaks(value, "subject")

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"not a header name: {name!r}")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name} is set from the message's own fields")
            _no_line_breaks(text, f"header {name}")
        return value


class DeliveryReceipt(BaseModel):
    """What the transport said when it took the message."""

    message_id: str
    transport: Transport
    detail: str  # smtp: host:port and the server's answer to DATA; maildir: the file's key and folder
    duplicate: bool = False  # maildir: the id was already in the folder, so nothing was written


class DeliveryError(RuntimeError):
    """The message could not be delivered; the text names the server and its reply, never the password.

    `maybe_delivered` is True when the connection failed after the message body was sent
    and before the server answered: the server may have queued it.
    """

    def __init__(self, detail: str, maybe_delivered: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.maybe_delivered = maybe_delivered


class _KeepsDataReply:
    """`smtplib`'s `sendmail` drops the server's answer to DATA, where servers put their queue id.

    Keep it for the receipt, and note when DATA began: from then on a lost connection
    leaves the message's fate unknown.
    """

    data_reply: tuple[int, bytes] = (0, b"")
    data_started: bool = False

    def data(self, msg: Any) -> tuple[int, bytes]:
        self.data_started = True
        self.data_reply = super().data(msg)  # type: ignore[misc]
        return self.data_reply


class _SMTP(_KeepsDataReply, smtplib.SMTP):
    pass


class _SMTPOverSSL(_KeepsDataReply, smtplib.SMTP_SSL):
    pass


class MailerResource(ConfigurableResource):
    """Sends e-mail. Leave `smtp_host` empty for the embedded default: a Maildir folder at `maildir_path`."""

    smtp_host: str = Field(default="", description="SMTP server for replies; empty = a Maildir folder instead.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP server port.")
    smtp_username: str = Field(default="", description="SMTP login; empty = no login.")
    smtp_password: str = Field(
        default="", description="SMTP password, given to Dagster as an EnvVar (a name, never the value)."
    )
    smtp_security: SmtpSecurity = Field(
        default="none", description="none, starttls (upgrade the plain connection) or ssl (TLS from the start)."
    )
    smtp_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Seconds an SMTP connection may wait for the server."
    )
    maildir_path: str = Field(
        default="data/outputs/outbox", description="The Maildir folder replies go to when smtp_host is empty."
    )
    sender: str = Field(default="support@lumen-notes.example", description="From address of replies.")

    _maildir_ids: dict[str, str] = PrivateAttr(default_factory=dict)  # Maildir key -> Message-ID
    _maildir_lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def transport(self) -> Transport:
        return "smtp" if self.smtp_host else "maildir"

    def compose(self, message: OutgoingMessage) -> EmailMessage:
        """The e-mail as it will be sent, with `message_id` as its Message-ID."""
        email = EmailMessage()
        email["From"] = message.from_address or self.sender
        email["To"] = message.to_address
        email["Subject"] = message.subject
        email["Date"] = formatdate(localtime=True)
        email["Message-ID"] = message.message_id
        if message.in_reply_to:
            email["In-Reply-To"] = message.in_reply_to
            if "references" not in {name.lower() for name in message.headers}:
                email["References"] = message.in_reply_to
        for name, value in message.headers.items():
            email[name] = value
        email.set_content(message.body)
        return email

    def send(self, message: OutgoingMessage) -> DeliveryReceipt:
        """Deliver `message` once over the configured transport; raises `DeliveryError`."""
        email = self.compose(message)
        if self.transport == "smtp":
            return self._send_smtp(message, email)
        return self._write_maildir(message, email)

    # --- SMTP -----------------------------------------------------------------

    def _secret_forms(self) -> list[str]:
        """The password, and the base64 forms AUTH LOGIN and AUTH PLAIN put on the wire."""
        password = reveal(self.smtp_password)
        if not password:
            return []
        plain = f"\0{reveal(self.smtp_username)}\0{password}"
        return [password, *(base64.b64encode(s.encode()).decode() for s in (password, plain))]

    def _send_smtp(self, message: OutgoingMessage, email: EmailMessage) -> DeliveryReceipt:
        where = f"{self.smtp_host}:{self.smtp_port}"
        client: _SMTP | _SMTPOverSSL
        if self.smtp_security == "ssl":
            client = _SMTPOverSSL(timeout=self.smtp_timeout_seconds, context=ssl.create_default_context())
        else:
            client = _SMTP(timeout=self.smtp_timeout_seconds)
        step = "connect"
        error: DeliveryError | None = None
        try:
            client.connect(self.smtp_host, self.smtp_port)
            if self.smtp_security == "starttls":
                step = "STARTTLS"
                client.starttls(context=ssl.create_default_context())
            if self.smtp_username:
                step = "login"
                client.login(reveal(self.smtp_username), reveal(self.smtp_password))
            step = "send"
            client.send_message(
                email,
                from_addr=parseaddr(str(email["From"]))[1],
                to_addrs=[parseaddr(message.to_address)[1]],
            )
        except smtplib.SMTPRecipientsRefused as exc:
            replies = "; ".join(f"{rcpt}: {code} {_text(reply)}" for rcpt, (code, reply) in exc.recipients.items())
            error = self._error(f"SMTP {where} refused the recipient: {replies}")
        except smtplib.SMTPResponseException as exc:
            error = self._error(f"SMTP {where} refused at {step}: {exc.smtp_code} {_text(exc.smtp_error)}")
        except (smtplib.SMTPException, OSError) as exc:
            maybe = client.data_started
            what = (
                "connection lost after the message was sent, before the server answered"
                if maybe
                else f"failed at {step}"
            )
            error = self._error(f"SMTP {where} {what}: {type(exc).__name__}: {exc}", maybe_delivered=maybe)
        finally:
            _quit_quietly(client)
        if error is not None:
            # Raised outside the handler, so the original exception (whose text may hold
            # what the server echoed) is neither chained nor kept as context.
            raise error
        code, reply = client.data_reply
        return DeliveryReceipt(message_id=message.message_id, transport="smtp", detail=f"{where} {code} {_text(reply)}")

    def _error(self, text: str, maybe_delivered: bool = False) -> DeliveryError:
        return DeliveryError(redact(text, self._secret_forms()), maybe_delivered=maybe_delivered)

    # --- Maildir --------------------------------------------------------------

    def _maildir(self) -> mailbox.Maildir:
        return mailbox.Maildir(self.maildir_path, create=True)

    def maildir_key(self, message_id: str) -> str | None:
        """The key of the message with this Message-ID in the Maildir folder, if it is there.

        Reads the headers of files it has not seen before (new/ and cur/, so a message a
        mail client has already read still counts); keys are never reused, so what it has
        read stays true.
        """
        with self._maildir_lock:
            return self._find_in_maildir(self._maildir(), message_id)

    def already_in_maildir(self, message_id: str) -> bool:
        return self.maildir_key(message_id) is not None

    def _find_in_maildir(self, box: mailbox.Maildir, message_id: str) -> str | None:
        for key in box.keys():
            if key not in self._maildir_ids:
                try:
                    with box.get_file(key) as file:
                        headers = BytesHeaderParser(policy=default_policy).parse(file)  # type: ignore[arg-type]
                except (KeyError, FileNotFoundError):  # deleted since the listing
                    continue
                self._maildir_ids[key] = str(headers.get("Message-ID", "")).strip()
            if self._maildir_ids[key] == message_id:
                return key
        return None

    def _write_maildir(self, message: OutgoingMessage, email: EmailMessage) -> DeliveryReceipt:
        with self._maildir_lock:
            box = self._maildir()
            existing = self._find_in_maildir(box, message.message_id)
            if existing is not None:
                return self._maildir_receipt(message, existing, duplicate=True)
            try:
                key = box.add(email)  # written under tmp/, fsynced, then linked into new/: all or nothing
            except (OSError, mailbox.Error) as exc:
                found = self._find_in_maildir(self._maildir(), message.message_id)
                if found is not None:  # in new/ already; only the clean-up of tmp/ failed
                    return self._maildir_receipt(message, found, duplicate=False)
                raise DeliveryError(f"Maildir {self.maildir_path}: {type(exc).__name__}: {exc}") from None
            self._maildir_ids[key] = message.message_id
        return self._maildir_receipt(message, key, duplicate=False)

    def _maildir_receipt(self, message: OutgoingMessage, key: str, duplicate: bool) -> DeliveryReceipt:
        return DeliveryReceipt(
            message_id=message.message_id,
            transport="maildir",
            detail=f"{key} in {self.maildir_path}",
            duplicate=duplicate,
        )


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _quit_quietly(client: smtplib.SMTP) -> None:
    """Say goodbye if the connection is still up; a failed QUIT changes nothing about the message."""
    try:
        if client.sock is not None:
            client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()
