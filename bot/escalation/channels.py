"""Paging channels: Slack (thread mention + DM), email over SMTP, PagerDuty Events v2 webhook.

Each sender either returns (sent) or raises :class:`PageFailed` saying whether a
retry can help. Messages never carry secrets: the SMTP password and the routing
key stay in the connection/body and out of every error text.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.errors import PageFailed
from bot.redaction import redact
from bot.settings import Settings

PD_SOURCE = "aia-runbook-bot"
PAGE_EVENT = "aia_escalation_page"


@dataclass(frozen=True)
class SlackMessageOut:
    text: str
    blocks: list[dict[str, Any]] | None = None


class SlackPager:
    def __init__(self, web: WebClient | None) -> None:
        self.web = web

    def _client(self) -> WebClient:
        if self.web is None:
            raise PageFailed("Slack is not configured (SLACK_BOT_TOKEN)", retry=False)
        return self.web

    def post(self, channel: str, message: SlackMessageOut, thread_ts: str | None = None,
             page_key: str | None = None) -> str:
        # A page carries its key as message metadata, so a replica re-sending a page whose
        # sender died mid-way can first look whether it already arrived (already_posted).
        metadata = {"event_type": PAGE_EVENT, "event_payload": {"key": page_key}} if page_key else None
        try:
            response = self._client().chat_postMessage(
                channel=channel, text=message.text, blocks=message.blocks, thread_ts=thread_ts,
                unfurl_links=False, unfurl_media=False, metadata=metadata,
            )
        except SlackApiError as exc:
            raise PageFailed(f"Slack: {_slack_error(exc)}", retry=_slack_retry(exc)) from None
        except OSError as exc:
            raise PageFailed(f"Slack: {type(exc).__name__}") from None
        return str(response.get("ts") or "")

    def update(self, channel: str, ts: str, message: SlackMessageOut) -> None:
        try:
            self._client().chat_update(channel=channel, ts=ts, text=message.text, blocks=message.blocks)
        except SlackApiError as exc:
            raise PageFailed(f"Slack: {_slack_error(exc)}", retry=_slack_retry(exc)) from None
        except OSError as exc:
            raise PageFailed(f"Slack: {type(exc).__name__}") from None

    def delete(self, channel: str, ts: str) -> None:
        try:
            self._client().chat_delete(channel=channel, ts=ts)
        except (SlackApiError, OSError):
            pass  # an orphan card is cosmetic

    def upload(self, channel: str, thread_ts: str | None, filename: str, content: str, title: str) -> None:
        try:
            self._client().files_upload_v2(
                channel=channel, thread_ts=thread_ts, content=content, filename=filename, title=title,
            )
        except SlackApiError as exc:
            raise PageFailed(f"Slack: upload: {_slack_error(exc)}", retry=_slack_retry(exc)) from None
        except OSError as exc:
            raise PageFailed(f"Slack: {type(exc).__name__}") from None

    def members(self, principal: str) -> list[str]:
        """A user ID as is; a user group expanded to its members."""
        if not principal.startswith("S"):
            return [principal]
        try:
            response = self._client().usergroups_users_list(usergroup=principal)
        except SlackApiError as exc:
            raise PageFailed(f"Slack: user group {principal}: {_slack_error(exc)}", _slack_retry(exc)) from None
        except OSError as exc:
            raise PageFailed(f"Slack: {type(exc).__name__}") from None
        return [str(u) for u in response.get("users") or []]

    def already_posted(self, channel: str, page_key: str, thread_ts: str | None = None) -> bool:
        """Whether a page with this key is among the recent messages (needs *:history scopes).

        When Slack cannot tell (no scope, error), the answer is False: a page sent twice
        is better than a page never sent.
        """
        try:
            if thread_ts:
                response = self._client().conversations_replies(
                    channel=channel, ts=thread_ts, limit=200, include_all_metadata=True)
            else:
                response = self._client().conversations_history(channel=channel, limit=50, include_all_metadata=True)
        except (SlackApiError, OSError, PageFailed):
            return False
        for message in response.get("messages") or []:
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") == PAGE_EVENT and (metadata.get("event_payload") or {}).get("key") == page_key:
                return True
        return False

    def direct_message(self, user_id: str, message: SlackMessageOut, page_key: str | None = None,
                       check_first: bool = False) -> None:
        try:
            opened = self._client().conversations_open(users=user_id)
            channel = (opened.get("channel") or {}).get("id")
            if not channel:
                raise PageFailed(f"Slack: no DM channel for {user_id}", retry=False)
        except SlackApiError as exc:
            raise PageFailed(f"Slack: DM to {user_id}: {_slack_error(exc)}", _slack_retry(exc)) from None
        except OSError as exc:
            raise PageFailed(f"Slack: {type(exc).__name__}") from None
        if check_first and page_key and self.already_posted(channel, page_key):
            return
        self.post(channel, message, page_key=page_key)


def _slack_error(exc: SlackApiError) -> str:
    response = exc.response
    return str(response.get("error") if response is not None else "error")


def _slack_retry(exc: SlackApiError) -> bool:
    response = exc.response
    status = getattr(response, "status_code", 200) if response is not None else 500
    return status == 429 or status >= 500


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    starttls: bool
    username: str | None
    password: str | None
    sender: str
    ca_file: Path | None
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig | None:
        """None when SMTP_HOST is not set (email paging off; a policy that emails is refused at start)."""
        if not settings.smtp_host:
            return None
        return cls(host=settings.smtp_host, port=settings.smtp_port, starttls=settings.smtp_starttls,
                   username=settings.smtp_username,
                   password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                   sender=settings.smtp_from, ca_file=settings.smtp_ca_file, timeout=settings.smtp_timeout_seconds)


class EmailPager:
    def __init__(self, config: SmtpConfig | None) -> None:
        self.config = config

    def send(self, to: str, subject: str, body: str, headers: dict[str, str], message_id: str | None = None) -> None:
        config = self.config
        if config is None:
            raise PageFailed("email: SMTP_HOST is not set", retry=False)
        message = EmailMessage()
        message["From"] = config.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        # A stable Message-ID per page: if a replica dies between the SMTP server's "250"
        # and recording it, the re-sent copy is the same message to mail systems.
        domain = config.sender.rsplit("@", 1)[-1]
        message["Message-ID"] = f"<{message_id}@{domain}>" if message_id else make_msgid(domain=domain)
        for name, value in headers.items():
            message[name] = value
        message.set_content(body)
        self._session(config, lambda smtp: smtp.send_message(message), to)

    def check(self) -> str:
        """Connect, STARTTLS and log in as a page would, send nothing: for `aia-bot check`."""
        config = self.config
        if config is None:
            raise PageFailed("SMTP_HOST is not set", retry=False)
        self._session(config, lambda smtp: smtp.noop(), "")
        return (f"{config.host}:{config.port}" + (", STARTTLS" if config.starttls else ", no TLS")
                + (", login accepted" if config.username else ", no login"))

    @staticmethod
    def _session(config: SmtpConfig, work: Callable[[smtplib.SMTP], object], to: str) -> None:
        try:
            with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
                smtp.ehlo()
                if config.starttls:
                    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if config.username:
                    smtp.login(config.username, config.password or "")
                work(smtp)
        except smtplib.SMTPAuthenticationError as exc:
            raise PageFailed(f"email: SMTP login refused ({exc.smtp_code})", retry=False) from None
        except smtplib.SMTPRecipientsRefused:
            raise PageFailed(f"email: {to} refused by the SMTP server", retry=False) from None
        except smtplib.SMTPResponseException as exc:
            # 4xx: try again later; 5xx: permanent.
            raise PageFailed(f"email: SMTP answered {exc.smtp_code}", retry=exc.smtp_code < 500) from None
        except (TimeoutError, smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            reason = _short_reason(exc)
            raise PageFailed(f"email: SMTP server {config.host}:{config.port} {reason}") from None


def _short_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    return f"failed ({type(exc).__name__})"


class WebhookPager:
    """PagerDuty Events API v2: one dedup key per escalation, trigger/acknowledge/resolve."""

    def __init__(self, routing_key: str | None, timeout: float = 10.0) -> None:
        self.routing_key = routing_key
        self.timeout = timeout

    def send(self, url: str, action: str, dedup_key: str, summary: str = "",
             severity: str = "critical", details: dict[str, Any] | None = None,
             links: list[dict[str, str]] | None = None) -> None:
        body: dict[str, Any] = {
            "routing_key": self.routing_key or "",
            "event_action": action,
            "dedup_key": dedup_key,
        }
        if action == "trigger":
            body["payload"] = {
                "summary": summary[:1024] or dedup_key,
                "source": PD_SOURCE,
                "severity": severity if severity in {"critical", "error", "warning", "info"} else "critical",
                "custom_details": details or {},
            }
            if links:
                body["links"] = links
        request = urllib.request.Request(  # noqa: S310 - the URL is an http(s) URL checked by the policy
            url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": PD_SOURCE},
        )
        host = urllib.parse.urlsplit(url).netloc
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            retry = exc.code == 429 or exc.code >= 500
            raise PageFailed(f"webhook {host} answered HTTP {exc.code}", retry=retry) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            text = redact(str(reason))[:120]
            raise PageFailed(f"webhook {host} unreachable ({text})") from None

    def check(self, url: str) -> str:
        """Whether the paging webhook's server can be reached (TCP, and TLS for https).

        Sends no event: a test trigger would open a real incident and call someone.
        """
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=self.timeout) as sock:
                if parts.scheme == "https":
                    with ssl.create_default_context().wrap_socket(sock, server_hostname=host):
                        pass
        except (OSError, ssl.SSLError) as exc:
            raise PageFailed(f"webhook {parts.netloc} unreachable ({_short_reason(exc)})") from None
        return f"{parts.netloc} reachable ({parts.scheme.upper()})"
