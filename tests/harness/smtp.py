"""A real SMTP server (aiosmtpd) with STARTTLS and AUTH, in the test process.

It records every accepted message; ``down()`` closes the port (connection
refused, as when the mail relay is down) and ``up()`` opens it again.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.harness.bot_process import free_port

SMTP_USER = "aia-bot"
SMTP_PASSWORD = "smtp-pass-Zq81-never-shown"  # noqa: S105 - a test credential


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float

    @property
    def headers(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.message.items()}


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1; the bot trusts it through SMTP_CA_FILE."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign"],
        check=True, capture_output=True,
    )
    return cert, key


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.server.lock:
            self.server.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message,  # type: ignore[arg-type]
                                                     time.time()))
        return "250 Message accepted"


class SmtpServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.cert, self.key = make_certificate(directory)
        self.messages: list[ReceivedMail] = []
        self.logins: list[tuple[str, bool]] = []
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode() \
            and auth_data.password == SMTP_PASSWORD.encode()
        with self.lock:
            self.logins.append((auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?", ok))
        # handled=False: aiosmtpd then answers "535 ... credentials invalid" as a real server
        # does (its default, handled=True, answers nothing and the client times out).
        return AuthResult(success=ok, handled=False)

    def up(self) -> SmtpServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, tls_context=context, require_starttls=True,
            authenticator=self._authenticate, auth_require_tls=True, ready_timeout=10,
        )
        self._controller.start()
        return self

    def down(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def env(self) -> dict[str, str]:
        return {
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_STARTTLS": "true",
            "SMTP_USERNAME": SMTP_USER, "SMTP_PASSWORD": SMTP_PASSWORD, "SMTP_CA_FILE": str(self.cert),
            "SMTP_TIMEOUT_SECONDS": "5",
        }

    def received(self, escalation_id: str | None = None) -> list[ReceivedMail]:
        with self.lock:
            return [m for m in self.messages
                    if escalation_id is None or m.message.get("X-AIA-Escalation") == escalation_id]
