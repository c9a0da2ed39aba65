"""Sending claimed pages over the channels, and recording what happened.

Slack and webhook pages of a step go first and are marked sent together; emails go last,
each on its own, so a slow SMTP server delays nothing else. A failed page is retried
(doubling delay, up to AIA_ESCALATION_MAX_ATTEMPTS) and the thread says so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine, insert, select, tuple_, update

from bot.errors import PageFailed
from bot.escalation import pg_batches
from bot.escalation.channels import (
    EmailPager,
    SlackMessageOut,
    SlackPager,
    WebhookPager,
)
from bot.escalation.claims import ESCALATIONS, EVENTS, PAGES, Claim, event_values
from bot.escalation.engines import retry_once
from bot.escalation.page_claims import PageClaims
from bot.escalation.pages import Incident, Page, channel_label, email_body, target_label
from bot.escalation.state import BOT_ACTOR, Status
from bot.escalation.views import EscalationRenderer, view_of
from bot.validators import format_duration

log = logging.getLogger(__name__)


class Thread(Protocol):
    """Where a note goes: an escalation's channel and thread."""

    @property
    def id(self) -> str: ...

    @property
    def channel_id(self) -> str: ...

    @property
    def thread_ts(self) -> str | None: ...


class SentMarks:
    """Marks pages sent, many claims per transaction (group commit).

    The paging thread that finds no write under way writes everything recorded so far, and
    goes on while others record more; the others return at once. Under a burst this is one
    commit for dozens of steps instead of one each, and no page waits for a timer.
    """

    def __init__(self, engine: Engine, replica: str, clock: Callable[[], datetime]) -> None:
        self.engine = engine  # engines.py: autocommit, no wait for the WAL flush (on PostgreSQL)
        self.replica = replica
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: list[tuple[int, str]] = []
        self._writing = False

    def record(self, pages: list[int], token: str) -> None:
        """Pages sent under ``token`` (their attempts count one more)."""
        if not pages:
            return
        with self._lock:
            self._pending += [(page, token) for page in pages]
            if self._writing:
                return
            self._writing = True
        try:
            while True:
                with self._lock:
                    batch, self._pending = self._pending, []
                    if not batch:
                        return
                self._write(batch)
        finally:
            with self._lock:
                self._writing = False

    def _write(self, batch: list[tuple[int, str]]) -> None:
        def write() -> None:
            # Only the holder of a page's token may mark it (a page taken over meanwhile is
            # the new holder's). One statement for the batch.
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    pg_batches.mark_sent(conn, batch, self.clock(), self.replica)
                    return
                conn.execute(
                    update(PAGES).where(tuple_(PAGES.c.id, PAGES.c.claim_token).in_(batch))
                    .values(status="sent", sent_at=self.clock(), sent_by=self.replica,
                            attempts=PAGES.c.attempts + 1, claim_token=None, claimed_until=None)
                )

        retry_once(write)


class Delivery:
    def __init__(self, engine: Engine, marks: SentMarks, claims: PageClaims, slack: SlackPager, email: EmailPager,
                 webhook: WebhookPager, renderer: Callable[[], EscalationRenderer], clock: Callable[[], datetime],
                 max_attempts: int, retry_seconds: float) -> None:
        self.engine = engine
        self.claims = claims
        self.slack = slack
        self.email = email
        self.webhook = webhook
        self.renderer = renderer
        self.clock = clock
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.marks = marks

    def send_claimed(self, claim: Claim) -> None:
        ids = [p.id for p in claim.pages]
        mine = set(ids) if self.claims.surely_mine(claim) else self.claims.still_mine(ids, claim.token)
        sent: list[int] = []
        for page in claim.pages:
            if page.kind != "email" and page.id in mine:
                try:
                    if self._attempt(claim.incident, page, claim.token, recovering=False):
                        sent.append(page.id)
                except Exception:  # noqa: BLE001 - one broken page must not stop the others
                    log.exception("escalation page %s failed unexpectedly", page.id)
        self.marks.record(sent, claim.token)
        for page in claim.pages:
            if page.kind == "email" and page.id in mine:
                self._send_one(claim.incident, page, claim.token, recovering=False)

    def send(self, delivery_ids: list[int], token: str, recovering: bool = False) -> None:
        """Send pages held by ``token``. ``recovering``: a retry, or the previous holder died mid-way."""
        for delivery_id in delivery_ids:
            loaded = self.claims.load(delivery_id, token)
            if loaded is not None:
                self._send_one(*loaded, token, recovering)

    def _send_one(self, incident: Incident, page: Page, token: str, recovering: bool) -> None:
        try:
            if page.kind == "email" and not self.claims.still_mine([page.id], token):
                return
            if not self._attempt(incident, page, token, recovering):
                return
            self.marks.record([page.id], token)
            if page.attempts > 0 and page.kind in ("email", "webhook"):
                self.note(incident, f":white_check_mark: {channel_label(page.kind)} to {target_label(page.kind, page.target)} "
                                    f"went out on attempt {page.attempts + 1}.", "ok")
        except Exception:  # noqa: BLE001 - one broken page must not stop the others
            log.exception("escalation page %s failed unexpectedly", page.id)

    def _attempt(self, incident: Incident, page: Page, token: str, recovering: bool) -> bool:
        """Send one page; on failure record it (retry or give up) and return False."""
        try:
            self._deliver(incident, page, recovering)
        except PageFailed as exc:
            self._failed(incident, page, token, exc)
            return False
        return True

    def _deliver(self, incident: Incident, page: Page, recovering: bool) -> None:
        payload = page.payload
        page_key = f"{incident.id}/{page.key}"
        if page.kind == "slack_thread":
            if recovering and self.slack.already_posted(incident.channel_id, page_key, incident.thread_ts):
                return
            self.slack.post(incident.channel_id, self.renderer().note(payload["text"], "critical"),
                            thread_ts=incident.thread_ts, page_key=page_key)
        elif page.kind == "slack_dm":
            message = SlackMessageOut(text=(
                f":rotating_light: You are paged (level {payload['level']} {payload['level_name']}) "
                f"for *{incident.title}*. Escalation `{incident.id}`: acknowledge in <#{incident.channel_id}>."))
            for user in self.slack.members(page.target):
                self.slack.direct_message(user, message, f"{page_key}/{user}", recovering)
        elif page.kind == "email":
            self.email.send(
                page.target, f"[AIA page] level {payload['level']} {payload['level_name']}: {incident.title}"[:200],
                email_body(incident, payload),
                {"X-AIA-Escalation": incident.id, "X-AIA-Level": str(payload["level"]),
                 "X-AIA-Step": str(payload["seq"])},
                message_id=f"{incident.id}.{page.key.replace(':', '.').replace('@', '.')}",
            )
        elif page.kind == "webhook":
            self.webhook.send(
                page.target, payload.get("action", "trigger"), f"aia-escalation-{incident.id}",
                summary=f"[AIA] {incident.title}", severity=str(payload.get("severity") or "critical"),
                details={"escalation": incident.id, "level": payload.get("level"),
                         "level_name": payload.get("level_name"), "step": payload.get("seq"),
                         "channel": incident.channel_id},
            )
        else:
            raise PageFailed(f"unknown page kind {page.kind}", retry=False)

    def _failed(self, incident: Incident, page: Page, token: str, exc: PageFailed) -> None:
        attempts = page.attempts + 1
        retry = exc.retry and attempts < self.max_attempts and incident.status != Status.RESOLVED
        delay = self.retry_seconds * (2 ** (attempts - 1))
        now = self.clock()
        label, target = channel_label(page.kind), target_label(page.kind, page.target)
        with self.engine.begin() as conn:
            conn.execute(
                update(PAGES).where(PAGES.c.id == page.id, PAGES.c.claim_token == token)
                .values(status="pending" if retry else "failed", attempts=attempts, last_error=exc.message[:500],
                        next_attempt_at=now + timedelta(seconds=delay), claim_token=None, claimed_until=None)
            )
            conn.execute(insert(EVENTS).values(event_values(
                incident.id, now, "page_failed", BOT_ACTOR, page.level,
                f"{label} to {target}: {exc.message} (attempt {attempts})")))
        log.warning("escalation %s: %s to %s failed (attempt %d): %s", incident.id, page.kind, target, attempts,
                    exc.message)
        if page.kind == "slack_thread":
            return  # nowhere to say it; the retry posts the page itself
        if retry and attempts == 1:
            other = "Slack paging goes on" if page.kind != "slack_dm" else "the thread mention went out"
            self.note(incident, f":warning: {label} to {target} failed: {exc.message}. "
                                f"Retrying in {format_duration(delay)}; {other}.", "warning")
        elif not retry:
            self.note(incident, f":x: {label} to {target} failed for good after "
                                f"{attempts} attempt{'s' if attempts > 1 else ''}: {exc.message}.", "warning")

    def note(self, thread: Thread, text: str, tone: str) -> None:
        """A best-effort thread message (the database already holds the fact)."""
        try:
            self.slack.post(thread.channel_id, self.renderer().note(text, tone), thread_ts=thread.thread_ts)
        except PageFailed as exc:
            log.warning("escalation %s: thread note not posted: %s", thread.id, exc.message)

    def refresh_card(self, escalation_id: str) -> None:
        with self.engine.connect() as conn:
            row = conn.execute(select(ESCALATIONS).where(ESCALATIONS.c.id == escalation_id)).first()
        if row is None or not row.card_ts:
            return
        try:
            self.slack.update(row.channel_id, row.card_ts, self.renderer().card(view_of(row, self.clock)))
        except PageFailed as exc:
            log.warning("escalation %s: card not updated: %s", row.id, exc.message)
