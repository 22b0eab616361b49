"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), counting what actually arrived.

Exactly-once delivery can only be judged where the messages land, so tests send over a
real socket to this server and count the Message-IDs it received, instead of mocking
`smtplib`. Faults are scripted per DATA command, to fail one message in the middle of a
batch the way a real server does:

- "reject": answer the DATA with `451 4.3.0` and keep nothing (a definite refusal);
- "drop": keep the message, then close the connection without answering (the server
  queued it, but the client never heard so: the in-doubt case).

`password_echo` makes authentication fail with a reply that repeats the password, as a
careless server might, so tests can check that the password never reaches an error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any, Callable, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.ports import free_port

Fault = Literal["reject", "drop"]


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    message_id: str
    subject: str
    raw: bytes = field(repr=False)


class _Handler:
    def __init__(self, server: "SmtpTestServer"):
        self.server = server

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        return self.server._on_data(smtp, envelope)


class SmtpTestServer:
    """Start with `with SmtpTestServer() as server:`; send to `server.host`, `server.port`."""

    host = "127.0.0.1"

    def __init__(self, username: str = "", password: str = "", password_echo: bool = False):
        self.username = username
        self.password = password
        self.password_echo = password_echo
        self.received: list[ReceivedMessage] = []
        self.data_commands = 0
        self._faults: dict[int, Fault] = {}
        # Called with the message's number once it is kept and before the server answers: a test can
        # kill the sending process there, the one window in which a send cannot be recorded.
        self.on_accept: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self.port = 0

    # --- scripting and reading ------------------------------------------------

    def fail_data(self, ordinal: int, fault: Fault = "reject") -> None:
        """Make the `ordinal`-th DATA command from now (1 = the next one) fail with `fault`."""
        with self._lock:
            self._faults[self.data_commands + ordinal] = fault

    def message_ids(self) -> list[str]:
        with self._lock:
            return [m.message_id for m in self.received]

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self._faults.clear()
            self.data_commands = 0

    # --- server side ----------------------------------------------------------

    def _on_data(self, smtp: SMTP, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = message_from_bytes(content, policy=default_policy)
        with self._lock:
            self.data_commands += 1
            fault = self._faults.pop(self.data_commands, None)
            if fault == "reject":
                return "451 4.3.0 Temporary failure, try again later"
            self.received.append(
                ReceivedMessage(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    message_id=str(parsed.get("Message-ID", "")).strip(),
                    subject=str(parsed.get("Subject", "")),
                    raw=content,
                )
            )
            number = len(self.received)
        if self.on_accept is not None:
            self.on_accept(number)
        if fault == "drop":
            assert smtp.transport is not None
            smtp.transport.abort()  # the message is kept; the client never hears the answer
        return f"250 2.0.0 Ok: queued as TEST{number:04d}"

    def _authenticate(self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            if not self.password_echo and (login, password) == (self.username, self.password):
                return AuthResult(success=True)
            if self.password_echo:
                return AuthResult(success=False, handled=False, message=f"535 5.7.8 Bad credentials {login}:{password}")
        return AuthResult(success=False, handled=False)

    def start(self) -> "SmtpTestServer":
        for _ in range(5):  # a free port can be taken between finding it and binding it
            self.port = free_port()
            controller = Controller(
                _Handler(self),
                hostname=self.host,
                port=self.port,
                ready_timeout=5,
                authenticator=self._authenticate,
                auth_require_tls=False,  # tests speak plain SMTP on loopback
            )
            try:
                controller.start()
            except OSError:
                controller.stop(no_assert=True)
                continue
            self._controller = controller
            return self
        raise RuntimeError("no free port for the SMTP test server")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> "SmtpTestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
